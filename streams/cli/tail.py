"""`pinstream tail TOPIC`: decoded events as JSON lines."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

import click

from streams.cli.common import err, reports_errors, settings_or_exit
from streams.consumer import EventConsumer
from streams.deadletter import RawRecord
from streams.errors import ContractError
from streams.events import ConsumedRecord
from streams.metrics import serve_metrics

_MAX_BYTES_SHOWN = 64


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, bytes):
        shown = base64.b64encode(value[:_MAX_BYTES_SHOWN]).decode()
        return {"bytes": len(value), "base64_prefix": shown}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def record_json(record: ConsumedRecord) -> str:
    return json.dumps({
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "key": record.key.decode(errors="replace") if record.key is not None else None,
        "type": record.value.schema_name,
        "value": _jsonable(record.value.to_record()),
    }, separators=(",", ":"))


@click.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained record.")
@click.option("--max", "max_records", type=int, default=None, help="Stop after N records.")
@click.option("--idle-timeout", type=float, default=None,
              help="Stop after this many seconds without a new record.")
@click.option("--group", default=None, help="Consumer group (default: a fresh one, nothing committed).")
@reports_errors
def tail(topic: str, from_beginning: bool, max_records: int | None, idle_timeout: float | None,
         group: str | None) -> None:
    """Print decoded events of TOPIC as JSON lines; undecodable records are reported on stderr."""
    settings = settings_or_exit()

    def report(raw: RawRecord, exc: ContractError) -> None:
        err(f"{raw.source}: undecodable ({exc.reason}): {exc}")

    serve_metrics(settings)
    consumer = EventConsumer(settings, [settings.topic(topic)],
                             group_id=group or f"pinstream-tail-{uuid.uuid4().hex[:8]}",
                             from_beginning=from_beginning, on_decode_error=report)
    try:
        for record in consumer.iter(max_records=max_records, idle_timeout=idle_timeout):
            click.echo(record_json(record))
            if group:
                consumer.commit(record, asynchronous=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
