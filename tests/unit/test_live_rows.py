"""The live patch process's graph rows: read through, kept current by pushed row writes, read
again after their TTL or after pushes were lost, bounded in cells."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import pytest

from processors.live_rows import LiveRows
from sinks.hbase_graph import Edge, RowWrite, StoredRow
from streams.errors import SinkError

HALF_LIFE_MS = 7 * 86_400_000.0


class FakeStore:
    """Our GraphStore's read interface over a dict; `during_read` runs inside a read."""

    def __init__(self, rows: dict[str, dict[str, Edge]]) -> None:
        self.rows = rows
        self.reads: list[list[str]] = []
        self.during_read: list[object] = []
        self.fail = False

    def read_rows(self, keys: Iterable[str]) -> Mapping[str, StoredRow]:
        keys = list(keys)
        self.reads.append(keys)
        if self.fail:
            raise SinkError("hbase down", dependency="hbase", retry_after=None)
        found = {key: StoredRow(dict(self.rows[key])) for key in keys if key in self.rows}
        for action in self.during_read:
            action()  # type: ignore[operator]
        self.during_read.clear()
        return found


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rows(store: FakeStore, clock: Clock | None = None, max_cells: int = 10_000,
          ttl_s: float = 60.0) -> LiveRows:
    return LiveRows(store, max_cells=max_cells, ttl_s=ttl_s, half_life_ms=HALF_LIFE_MS,
                    clock=clock or Clock())


def test_rows_are_read_once_then_served_from_memory_and_absent_rows_are_empty() -> None:
    store = FakeStore({"p:1": {"p:2": Edge(2.0, 10)}})
    rows = _rows(store)
    assert rows.refresh(["p:1", "u:a", "p:1"]) == 2
    assert rows.refresh(["p:1", "u:a"]) == 0
    assert store.reads == [["p:1", "u:a"]]
    assert rows.peek("p:1") == {"p:2": Edge(2.0, 10)}
    assert rows.peek("u:a") == {}
    assert rows.peek("p:9") is None


def test_pushed_writes_update_cached_rows_only() -> None:
    store = FakeStore({"p:1": {"p:2": Edge(2.0, 10), "p:3": Edge(1.0, 10)}})
    rows = _rows(store)
    rows.refresh(["p:1"])
    before = rows.peek("p:1")
    rows.written([RowWrite("p:1", {"p:2": Edge(5.0, 20), "p:4": Edge(1.0, 20)}, ("p:3",)),
                  RowWrite("p:7", {"p:1": Edge(1.0, 20)})])
    assert rows.peek("p:1") == {"p:2": Edge(5.0, 20), "p:4": Edge(1.0, 20)}
    assert before == {"p:2": Edge(2.0, 10), "p:3": Edge(1.0, 10)}  # a planner's copy never changes
    assert rows.peek("p:7") is None  # not cached: read when needed, from HBase
    assert rows.cells == 3


def test_a_write_pushed_while_its_row_is_read_lands_on_top_of_the_read() -> None:
    # The read saw the row before the graph stage's write; the push came before the read returned.
    store = FakeStore({"p:1": {"p:2": Edge(2.0, 10)}})
    rows = _rows(store)
    store.during_read.append(lambda: rows.written([RowWrite("p:1", {"p:2": Edge(3.0, 30)}),
                                                    RowWrite("p:1", {"p:2": Edge(4.0, 40)})]))
    rows.refresh(["p:1"])
    assert rows.peek("p:1") == {"p:2": Edge(4.0, 40)}  # in arrival order: the newest write wins


def test_rows_are_read_again_after_their_ttl() -> None:
    clock = Clock()
    store = FakeStore({"u:a": {"p:1": Edge(1.0, 10)}})
    rows = _rows(store, clock, ttl_s=5.0)
    rows.refresh(["u:a"])
    store.rows["u:a"] = {"p:1": Edge(1.0, 10), "p:2": Edge(1.0, 20)}
    clock.now += 4.9
    rows.refresh(["u:a"])
    assert rows.peek("u:a") == {"p:1": Edge(1.0, 10)}
    clock.now += 0.2
    assert rows.refresh(["u:a"]) == 1
    assert rows.peek("u:a") == store.rows["u:a"]


def test_forget_drops_everything_and_a_read_in_flight_is_not_kept() -> None:
    store = FakeStore({"p:1": {"p:2": Edge(2.0, 10)}, "p:5": {}})
    rows = _rows(store)
    rows.refresh(["p:5"])
    store.during_read.append(rows.forget)  # pushes were lost while p:1 was being read
    rows.refresh(["p:1"])
    assert rows.peek("p:1") is None and rows.peek("p:5") is None
    assert rows.cells == 0 and len(rows) == 0
    assert rows.refresh(["p:1"]) == 1  # read again, and kept this time
    assert rows.peek("p:1") == {"p:2": Edge(2.0, 10)}


def test_a_failed_read_changes_nothing_and_the_rows_are_read_next_time() -> None:
    store = FakeStore({"p:1": {"p:2": Edge(2.0, 10)}})
    rows = _rows(store)
    store.fail = True
    with pytest.raises(SinkError):
        rows.refresh(["p:1"])
    assert rows.peek("p:1") is None
    store.fail = False
    assert rows.refresh(["p:1"]) == 1


def test_noted_engagements_add_to_cached_rows_with_decay() -> None:
    store = FakeStore({"u:a": {"p:1": Edge(1.0, 0)}})
    rows = _rows(store)
    rows.refresh(["u:a"])
    rows.note("u:a", "p:1", 1.0, int(HALF_LIFE_MS))  # the old 1.0 has halved by then
    rows.note("u:a", "p:2", 3.0, 50)
    rows.note("u:z", "p:2", 3.0, 50)  # not cached: nothing to add to
    edges = rows.peek("u:a")
    assert edges is not None
    assert edges["p:1"] == Edge(1.5, int(HALF_LIFE_MS))
    assert edges["p:2"] == Edge(3.0, 50)
    assert rows.peek("u:z") is None


def test_cells_are_bounded_least_recently_read_first() -> None:
    store = FakeStore({f"p:{i}": {f"p:x{j}": Edge(1.0, 1) for j in range(9)} for i in range(10)})
    rows = _rows(store, max_cells=35)  # a row counts its edges and one more
    rows.refresh([f"p:{i}" for i in range(10)])
    assert rows.cells <= 35
    assert [rows.peek(f"p:{i}") is not None for i in range(10)] == [False] * 7 + [True] * 3


def test_pushes_from_another_thread_while_planning_reads_rows() -> None:
    store = FakeStore({"p:1": {f"p:{j}": Edge(1.0, 1) for j in range(2, 200)}})
    rows = _rows(store)
    rows.refresh(["p:1"])
    stop = threading.Event()

    def push() -> None:
        at = 2
        while not stop.is_set():
            at += 1
            rows.written([RowWrite("p:1", {f"p:{at % 500}": Edge(1.0, at)}, (f"p:{(at + 7) % 500}",))])

    pusher = threading.Thread(target=push)
    pusher.start()
    try:
        for _ in range(2000):
            snapshot = rows.peek("p:1")
            assert snapshot is not None
            sum(edge.weight for edge in snapshot.values())  # iterating a snapshot never fails
    finally:
        stop.set()
        pusher.join()


def test_missing_names_what_refresh_would_read_without_reading_it() -> None:
    store = FakeStore({"p:1": {"p:2": Edge(2.0, 10)}})
    clock = Clock()
    rows = _rows(store, clock, ttl_s=60.0)
    assert rows.missing(["p:1", "u:a", "p:1"]) == ["p:1", "u:a"]
    assert store.reads == []
    rows.refresh(["p:1"])
    assert rows.missing(["p:1", "u:a"]) == ["u:a"]  # cached: not missing
    clock.now += 60.0
    assert rows.missing(["p:1"]) == ["p:1"]  # past its TTL: read again
