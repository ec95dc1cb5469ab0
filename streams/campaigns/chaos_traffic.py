"""The fault campaign's traffic: the planted-interest workload (pins with real generated images in
the blob store, then the users' interaction sessions on those pins), tagged with the run so it
never meets another run's users in the shared Redis, published open-loop at an even rate.

Every record the broker refuses (the broker is one of the services the campaign stops) is sent
again with the same event id, so the topics end up holding each event at least once; the
pipeline's idempotency by event id is what keeps that from double counting.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice

from streams.blobs import BlobStore
from streams.errors import PinstreamError
from streams.events import Event, InteractionAction, PinCreated, PinInteraction
from streams.producer import DeliveryReport, EventProducer
from streams.settings import Settings
from streams.topics import PINS_CREATED, PINS_INTERACTIONS, TopicSpec
from streams.workload.pins import iter_pin_records
from streams.workload.population import build_world
from streams.workload.sessions import iter_interactions

Progress = Callable[[str], None]
_START = datetime(2026, 3, 1, tzinfo=UTC)
_INTERACTIONS_PER_SESSION = 10.0  # about what the generator yields; only sizes the session count
_RESEND_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    spec: TopicSpec
    key: str
    event: Event


def build_traffic(settings: Settings, *, pins: int, interactions: int, users: int, seed: int,
                  tag: str, progress: Progress) -> list[Outgoing]:
    """Pins first spread through the run (one every events/pins records), interactions between."""
    world = build_world(seed, users=users, pins=max(pins, 16), clusters=16)
    blobs = BlobStore(settings.blob_dir)
    created: list[Outgoing] = []
    for n, pin in enumerate(islice(iter_pin_records(world, start=_START), pins), start=1):
        assert pin.image is not None
        creation = PinCreated(event_id=uuid.UUID(pin.event_id),
                              event_time=datetime.fromtimestamp(pin.event_time_ms / 1000, UTC),
                              pin_id=f"{tag}-{pin.pin_id}", user_id=f"{tag}-{pin.user_id}",
                              board_id=f"{tag}-{pin.board_id}", title=pin.title,
                              description=pin.description, link=pin.link, tags=pin.tags,
                              image_ref=blobs.put(pin.image))
        created.append(Outgoing(PINS_CREATED, creation.pin_id, creation))
        if n % 100 == 0:
            progress(f"rendered {n}/{pins} pin images")
    per_user = max(interactions / (_INTERACTIONS_PER_SESSION * users), 0.1) * 1.3
    engaged: list[Outgoing] = []
    for record in islice(iter_interactions(world, start=_START, days=7, sessions_per_user=per_user),
                         interactions):
        event = PinInteraction(
            event_id=uuid.UUID(record.event_id),
            event_time=datetime.fromtimestamp(record.event_time_ms / 1000, UTC),
            user_id=f"{tag}-{record.user_id}", pin_id=f"{tag}-{record.pin_id}",
            action=InteractionAction(record.action.upper()), session_id=f"{tag}-{record.session_id}",
            board_id=f"{tag}-{record.board_id}" if record.board_id else None)
        engaged.append(Outgoing(PINS_INTERACTIONS, event.user_id, event))
    if len(engaged) < interactions:
        raise PinstreamError(f"the workload yielded {len(engaged)} interactions, fewer than "
                             f"{interactions}; raise --users")
    return _interleave(created, engaged)


def _interleave(pins: list[Outgoing], interactions: list[Outgoing]) -> list[Outgoing]:
    """Pin k at position about k x total / pins; interactions keep their order in between."""
    total = len(pins) + len(interactions)
    slots = {round(k * total / len(pins)) for k in range(len(pins))} if pins else set()
    pin_iter: Iterator[Outgoing] = iter(pins)
    rest: Iterator[Outgoing] = iter(interactions)
    out = [next(pin_iter) if position in slots else next(rest) for position in range(total)]
    assert next(pin_iter, None) is None and next(rest, None) is None
    return out


@dataclass
class TrafficReport:
    planned: int = 0
    sent: int = 0
    delivered: int = 0
    refused: int = 0  # delivery failures (each was sent again)
    resent: int = 0
    seconds: float = 0.0
    unacknowledged: int = 0  # still without a successful delivery at the end: counted as lost


class Publisher:
    """Publishes the traffic open-loop in a thread: record i is due at start + i / rate."""

    def __init__(self, settings: Settings, traffic: list[Outgoing], rate: float) -> None:
        self.traffic = traffic
        self.rate = rate
        self.report = TrafficReport(planned=len(traffic))
        self._acked: set[int] = set()
        self._refused: dict[int, float] = {}
        self._lock = threading.Lock()
        # The broker is stopped on purpose: its disconnects are expected, and every refused
        # record is counted and sent again, so librdkafka's own log is kept to critical lines.
        self._producer = EventProducer(settings, on_delivery=self._on_delivery, log_level=2)
        self._thread = threading.Thread(target=self._run, name="chaos-traffic", daemon=True)
        self.error: BaseException | None = None
        self.done = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def _on_delivery(self, report: DeliveryReport) -> None:
        index = report.context
        assert isinstance(index, int)
        with self._lock:
            if report.ok:
                self._acked.add(index)
                self._refused.pop(index, None)
                self.report.delivered += 1
            elif index not in self._acked:
                self._refused[index] = time.monotonic()
                self.report.refused += 1

    def _send(self, index: int) -> None:
        item = self.traffic[index]
        self._producer.send_event(item.spec, item.key, item.event, context=index)

    def _resend_due(self, *, all_now: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            due = [i for i, at in self._refused.items() if all_now or now - at >= _RESEND_AFTER_S]
            for index in due:
                del self._refused[index]
        for index in due:
            self._send(index)
            self.report.resent += 1

    def _run(self) -> None:
        started = time.monotonic()
        try:
            for index in range(len(self.traffic)):
                delay = started + index / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._send(index)
                self.report.sent += 1
                if index % 200 == 0:
                    self._resend_due()
            self._settle()
        except BaseException as exc:  # surfaced by join()
            self.error = exc
        finally:
            self.report.seconds = round(time.monotonic() - started, 1)
            self.done.set()

    def _settle(self, timeout_s: float = 600.0) -> None:
        """Flush, re-send what was refused, until every record is acknowledged (or time is up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._producer.flush(10)
            with self._lock:
                missing = len(self.traffic) - len(self._acked)
                refused = bool(self._refused)
            if missing == 0:
                break
            if refused:
                self._resend_due(all_now=True)
            else:
                time.sleep(0.5)
        with self._lock:
            self.report.unacknowledged = len(self.traffic) - len(self._acked)
        self._producer.flush(30)

    def close(self) -> None:
        with contextlib.suppress(PinstreamError):  # counted in report.unacknowledged
            self._producer.close(30)
