"""The single graph writer inside a real worker: once a newer writer claims the graph, the worker
writes nothing more to it and exits."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from sinks.hbase_graph import GraphStore, node_key
from streams.events import NodeType
from streams.localworker import LocalWorker
from streams.producer import PinProducer

pytestmark = pytest.mark.integration


def test_a_fenced_worker_stops_writing_the_graph_and_exits(tmp_path_factory: pytest.TempPathFactory) -> None:
    worker = LocalWorker(tmp_path_factory.mktemp("fenced"))
    try:
        worker.start()
        graph = GraphStore.from_settings(worker.settings, create_tables=False)
        try:
            with PinProducer(worker.settings) as producer:
                producer.interact(user_id="u1", pin_id="p1", action="save", session_id="s",
                                  board_id="b1", event_time=datetime.now(UTC))
            deadline = time.monotonic() + 60
            while not graph.edges(node_key(NodeType.USER, "u1")):
                assert time.monotonic() < deadline, "the worker never wrote the graph"
                time.sleep(0.5)

            graph.claim_writer()  # a newer writer, as a second worker would at its start
            with PinProducer(worker.settings) as producer:
                producer.interact(user_id="u2", pin_id="p2", action="save", session_id="s",
                                  board_id="b1", event_time=datetime.now(UTC))
            deadline = time.monotonic() + 90
            while worker.alive():
                assert time.monotonic() < deadline, "the fenced worker is still running"
                time.sleep(0.5)
            assert not graph.edges(node_key(NodeType.USER, "u2"))  # nothing written once fenced
            assert "fenced by epoch" in worker.log.read_text(errors="replace")
        finally:
            graph.close()
    finally:
        worker.stop()
        worker.cleanup()
