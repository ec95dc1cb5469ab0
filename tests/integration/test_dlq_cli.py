"""`pinstream reconcile status` and `pinstream dlq list | show | redrive` invoked as commands on the
real Kafka: a record the reconciler cannot re-drive becomes a dead letter with its reason; status
counts it; list and show find it; redrive is a dry run until --execute and never sends a letter twice."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from processors.reconcile_events import build_reconciliation
from streams.consumer import EventConsumer
from streams.errors import SinkError
from streams.events import Reconciliation, Stage
from streams.localworker import LocalWorker
from streams.producer import EventProducer
from streams.topics import HEADER_DLQ_REDRIVE_OF, RECONCILIATION

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def namespace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWorker]:
    """A private topic namespace (no worker process is started)."""
    space = LocalWorker(tmp_path_factory.mktemp("dlq"))
    yield space
    space.cleanup()


def pinstream(space: LocalWorker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=space.env, capture_output=True,
                          text=True, timeout=180, check=False)


def reconciliation_records(space: LocalWorker) -> list[tuple[Reconciliation, dict[str, bytes]]]:
    consumer = EventConsumer(space.settings, [space.settings.topic(RECONCILIATION.name)],
                             group_id=f"g-{uuid.uuid4()}")
    out = [(r.value, dict(r.headers)) for r in consumer.iter(idle_timeout=3)
           if isinstance(r.value, Reconciliation)]
    consumer.close()
    return out


def test_a_refused_record_is_listed_shown_counted_and_redriven_once(namespace: LocalWorker) -> None:
    record = build_reconciliation(SinkError("index write failed", dependency="faiss"), stage=Stage.INDEX,
                                  entity_type="pin", entity_id="p-index", payload=b"\x01\x02")
    producer = EventProducer(namespace.settings)
    producer.send_event(RECONCILIATION, record.entity_id, record)
    producer.close()

    status = pinstream(namespace, "reconcile", "status")
    assert status.returncode == 0, status.stderr
    assert "1 pending, 0 failed" in status.stdout
    assert "has never committed" in status.stderr  # names the fix: is the reconciler running?

    run = pinstream(namespace, "reconcile", "run", "--until-idle", "3")
    assert run.returncode == 0, run.stderr
    assert "dead_lettered 1" in run.stdout and "still held 0" in run.stdout

    status = pinstream(namespace, "reconcile", "status")
    assert "0 pending, 1 failed" in status.stdout
    assert "INDEX" in status.stdout and "faiss" in status.stdout

    listed = pinstream(namespace, "dlq", "list", "--reason", "reconciliation_refused")
    assert listed.returncode == 0, listed.stderr
    assert "1 dead letters (reconciliation_refused 1)" in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if "p-index" in line)
    letter_id = row.split("│")[1].strip()
    other = pinstream(namespace, "dlq", "list", "--reason", "bad_magic")
    assert other.stdout.strip().endswith("0 dead letters")

    shown = pinstream(namespace, "dlq", "show", letter_id)
    assert shown.returncode == 0, shown.stderr
    letter = json.loads(shown.stdout)
    assert letter["reason"] == "reconciliation_refused"
    assert letter["value"]["schema"] == "Reconciliation" and letter["value"]["entity_id"] == "p-index"
    assert letter["headers"]["pinstream.reconcile.stage"] == "INDEX"
    assert letter["headers"]["pinstream.reconcile.history"] == []  # refused at once: no attempts
    assert "no re-drive for stage INDEX" in letter["headers"]["pinstream.dlq.error"]

    missing = pinstream(namespace, "dlq", "show", "0:999999")
    assert missing.returncode == 1 and "pinstream dlq list" in missing.stderr

    dry = pinstream(namespace, "dlq", "redrive", letter_id)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 1 of 1 letters would be redriven" in dry.stdout
    assert len(reconciliation_records(namespace)) == 1  # nothing sent

    done = pinstream(namespace, "dlq", "redrive", letter_id, "--execute")
    assert done.returncode == 0, done.stderr
    assert "redriven 1 of 1 letters" in done.stdout
    records = reconciliation_records(namespace)
    assert len(records) == 2
    redriven, headers = records[1]
    assert redriven.entity_id == "p-index" and redriven.stage is Stage.INDEX
    assert headers[HEADER_DLQ_REDRIVE_OF].decode().endswith(f"/{letter_id.replace(':', '/')}")

    again = pinstream(namespace, "dlq", "redrive", "--reason", "reconciliation_refused", "--execute")
    assert again.returncode == 0, again.stderr
    assert "refused: already redriven" in again.stdout and "redriven 0 of 1" in again.stdout
    assert len(reconciliation_records(namespace)) == 2
