"""The `pinstream` command line: a group whose subcommands are imported only when used.

Entry point only: nothing imports this package. Lazy loading keeps `pinstream --help` and light
commands fast (the model and faust are imported only by the commands that need them).
"""

from __future__ import annotations

import importlib

import click

# name -> (module:attribute, one-line help shown by `pinstream --help`)
_COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("streams.cli.stack:stack", "Start, stop and inspect the local Kafka/Redis/HBase stack."),
    "topics": ("streams.cli.topics:topics", "Create/update and list the catalogue's topics."),
    "produce": ("streams.cli.produce:produce", "Validate and publish pins or interactions from JSONL."),
    "tail": ("streams.cli.tail:tail", "Print decoded events of a topic as JSON lines."),
    "replay": ("streams.cli.replay:replay", "Copy a range of a topic into another topic, exactly."),
    "groups": ("streams.cli.groups:groups", "Consumer-group lag and offset resets."),
    "gen": ("streams.cli.gen:gen", "Generate a deterministic workload of pins or interactions."),
    "bench": ("streams.cli.bench:bench", "Benchmarks: our figure beside the bare-library ceiling."),
    "config": ("streams.cli.config:config", "Show the effective settings (secrets masked)."),
    "worker": ("streams.cli.worker:worker", "Run the stream processors and the web views."),
    "search": ("streams.cli.search:search", "Visual search: the pins that look like an image."),
    "feed": ("streams.cli.feed:feed", "A user's ranked home feed from a running worker."),
    "reconcile": ("streams.cli.reconcile:reconcile", "Re-drive failed side effects; pending, failed counts."),
    "dlq": ("streams.cli.dlq:dlq", "List, show and redrive dead letters."),
    "verify": ("streams.cli.verify:verify", "Check the pipeline's invariants (lost, double-counted)."),
    "load": ("streams.cli.load:load", "Load campaign: sustained rate, 3x spike, memory, lag and pools."),
    "fuzz": ("streams.cli.fuzz:fuzz", "Bad-input campaign: fuzz every decoder, JSONL, images, dead letters."),
    "chaos": ("streams.cli.chaos:chaos", "Fault campaign: kill -9 and outages under load, then invariants."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="pinstream")
def cli() -> None:
    """Pinstream: pins, interactions, feeds and visual search over Kafka."""


def main() -> None:
    cli()
