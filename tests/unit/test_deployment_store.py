"""The SQLite store of API-created deployments (shared/deployment_store.py), on real files.

Round trips, the identity `update` keeps, the schema-version guard, the lock under threads, the
database's own CHECK, and durability on return: a process SIGKILLed right after `create` has
left its record for the next one.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared import deployment_store
from shared.deployment_store import SCHEMA_VERSION, DeploymentRecord, DeploymentStore, SlugTaken

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def record(slug: str = "acme-detect", **changes) -> DeploymentRecord:
    values = {
        "slug": slug,
        "owner": "acme",
        "name": "Detect",
        "project": "vision",
        "model": "yolo26n",
        "region": "us",
        "cpu": 2,
        "memory_gi": 4,
    }
    return DeploymentRecord(**{**values, **changes})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "deployments.db"  # its folder is the store's to make


@pytest.fixture
def store(path: Path):
    store = DeploymentStore(path)
    yield store
    store.close()


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection of its own to the file, behind the store's back."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def test_create_get_all_round_trip(store: DeploymentStore):
    created = store.create(record(created_at=1.0, updated_at=2.0))
    assert created.created_at == created.updated_at > 2.0  # the store's times, not the caller's
    assert created == record(created_at=created.created_at, updated_at=created.updated_at)
    assert created.desired == "running" and created.failure is None
    assert created.generation == 1 and created.deployed_generation is None
    assert store.get("acme-detect") == created
    assert store.all() == [created]
    assert store.get("nobody") is None


def test_all_is_oldest_first_then_by_slug_tombstones_included(store, monkeypatch):
    times = iter([30.0, 10.0, 20.0, 20.0])
    monkeypatch.setattr(deployment_store, "time", SimpleNamespace(time=lambda: next(times)))
    store.create(record("c-newest"))
    store.create(record("d-oldest", desired="deleted"))
    store.create(record("b-tied"))
    store.create(record("a-tied"))
    assert [r.slug for r in store.all()] == ["d-oldest", "a-tied", "b-tied", "c-newest"]


def test_a_taken_slug_is_refused_and_the_first_record_kept(store: DeploymentStore):
    first = store.create(record())
    with pytest.raises(SlugTaken, match="acme-detect"):
        store.create(record(owner="other", name="Mine now"))
    assert store.all() == [first]


def test_a_tombstone_keeps_its_slug_until_forgotten(store: DeploymentStore):
    store.create(record())
    store.update("acme-detect", redeploy=False, desired="deleted")
    with pytest.raises(SlugTaken):
        store.create(record())
    assert store.delete("acme-detect")
    assert store.create(record()).generation == 1


def test_update_bumps_the_generation_only_to_redeploy(store: DeploymentStore):
    created = store.create(record())
    renamed = store.update("acme-detect", redeploy=False, name="Renamed")
    assert renamed.name == "Renamed" and renamed.generation == 1
    assert renamed.updated_at >= created.updated_at
    assert renamed.created_at == created.created_at

    resized = store.update("acme-detect", redeploy=True, cpu=4, memory_gi=8, failure=None)
    assert (resized.cpu, resized.memory_gi, resized.generation) == (4, 8, 2)
    assert resized.updated_at >= renamed.updated_at
    assert store.get("acme-detect") == resized

    again = store.update("acme-detect", redeploy=True)  # nothing but a redeploy
    assert again.generation == 3 and again.updated_at >= resized.updated_at


def test_update_stores_every_changeable_field(store: DeploymentStore):
    store.create(record())
    changed = store.update(
        "acme-detect",
        redeploy=True,
        name="N",
        project="p2",
        model="yolo26s",
        region="eu",
        cpu=8,
        memory_gi=16,
        desired="stopped",
        failure="No node fits",
        metadata={"k": 1},
        deployed_generation=1,
    )
    assert store.get("acme-detect") == changed
    assert (changed.model, changed.region, changed.desired) == ("yolo26s", "eu", "stopped")
    assert (changed.failure, changed.metadata, changed.deployed_generation) == (
        "No node fits",
        {"k": 1},
        1,
    )


@pytest.mark.parametrize("field", ["owner", "created_at", "updated_at", "generation", "colour"])
def test_update_refuses_identity_and_unknown_fields(store: DeploymentStore, field: str):
    created = store.create(record())
    with pytest.raises(ValueError, match=field):
        store.update("acme-detect", redeploy=True, **{field: "x"})
    assert store.get("acme-detect") == created  # not even the generation moved


def test_update_refuses_a_new_slug(store: DeploymentStore):
    created = store.create(record())
    with pytest.raises(ValueError, match="slug"):
        store.update("acme-detect", redeploy=True, **{"slug": "renamed"})
    assert store.all() == [created]


def test_update_of_a_missing_slug_is_a_key_error(store: DeploymentStore):
    with pytest.raises(KeyError, match="nobody"):
        store.update("nobody", redeploy=True, name="x")
    assert store.all() == []


def test_mark_deployed_keeps_the_generation_and_update_time(store: DeploymentStore):
    store.create(record())
    updated = store.update("acme-detect", redeploy=True, cpu=3)
    store.mark_deployed("acme-detect", updated.generation)
    assert store.get("acme-detect") == replace(updated, deployed_generation=2)
    store.mark_deployed("nobody", 7)  # a record forgotten meanwhile: nothing to mark
    assert [r.slug for r in store.all()] == ["acme-detect"]


def test_delete_answers_whether_there_was_a_record(store: DeploymentStore):
    store.create(record())
    store.create(record("other"))
    assert store.delete("acme-detect") is True
    assert store.delete("acme-detect") is False
    assert store.get("acme-detect") is None
    assert [r.slug for r in store.all()] == ["other"]


def test_metadata_round_trips_nested_and_unicode(path: Path, store: DeploymentStore):
    metadata = {
        "team": "视觉 — équipe",
        "emoji": "🦾",
        "nested": {"list": [1, 2.5, None, True, {"deep": ["a", "ß"]}], "empty": {}},
        "quote": 'say "hi"\n\\',
    }
    assert store.create(record(metadata=metadata)).metadata == metadata
    assert store.get("acme-detect").metadata == metadata
    replaced = {"only": ["ü"]}
    assert store.update("acme-detect", redeploy=False, metadata=replaced).metadata == replaced
    store.close()
    reopened = DeploymentStore(path)
    try:
        assert reopened.get("acme-detect").metadata == replaced
    finally:
        reopened.close()


def test_records_survive_closing_and_reopening(path: Path):
    store = DeploymentStore(path)
    store.create(record("one"))
    store.create(record("two", metadata={"a": [1]}))
    store.update("two", redeploy=True, desired="stopped", failure="why")
    store.mark_deployed("two", 2)
    store.create(record("three"))
    store.delete("three")
    before = store.all()
    store.close()

    reopened = DeploymentStore(path)
    try:
        assert reopened.all() == before
        assert [r.slug for r in before] == ["one", "two"]
        assert reopened.get("two").deployed_generation == 2
    finally:
        reopened.close()
    with raw(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_writes_are_durable_on_return(store: DeploymentStore):
    # What "durable when they return" rests on: WAL and a full sync at every commit.
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert not store._db.in_transaction


def test_a_newer_schema_is_refused_not_overwritten(path: Path):
    store = DeploymentStore(path)
    kept = store.create(record())
    store.close()
    with raw(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.execute("ALTER TABLE deployments ADD COLUMN added_later TEXT")

    with pytest.raises(RuntimeError, match="newer"):
        DeploymentStore(path)

    with raw(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert db.execute("SELECT slug, generation FROM deployments").fetchall() == [(kept.slug, 1)]


def test_concurrent_updates_lose_none(store: DeploymentStore):
    store.create(record())
    threads, each = 8, 50
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(each):
                store.update("acme-detect", redeploy=True, name=f"t{n}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    final = store.get("acme-detect")
    assert final.generation == 1 + threads * each
    assert final.name.endswith(f"-{each - 1}")  # some thread's last update is the last one


def test_concurrent_creates_of_one_slug_let_exactly_one_win(store: DeploymentStore):
    threads = 8
    start = threading.Barrier(threads)
    results: list[str] = []

    def work(n: int) -> None:
        start.wait()
        try:
            store.create(record(owner=f"owner{n}"))
            results.append("created")
        except SlugTaken:
            results.append("taken")

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(results) == ["created"] + ["taken"] * (threads - 1)
    assert len(store.all()) == 1


def test_the_check_constraint_rejects_an_invalid_desired(path: Path, store: DeploymentStore):
    created = store.create(record())
    with raw(path) as db:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            db.execute("UPDATE deployments SET desired = 'paused' WHERE slug = 'acme-detect'")
        row = list(db.execute("SELECT * FROM deployments WHERE slug = 'acme-detect'").fetchone())
        row[0] = "sneaky"
        row[8] = "paused"  # desired
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            db.execute(f"INSERT INTO deployments VALUES ({', '.join('?' * len(row))})", row)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        store.update("acme-detect", redeploy=True, desired="paused")
    assert store.all() == [created]


def test_create_of_an_invalid_record_is_not_reported_as_a_taken_slug(store: DeploymentStore):
    with pytest.raises(sqlite3.IntegrityError):
        store.create(record(desired="paused"))  # type: ignore[arg-type]


CHILD = """
import os, signal, sys
from pathlib import Path
from shared.deployment_store import DeploymentRecord, DeploymentStore

store = DeploymentStore(Path(sys.argv[1]))
store.create(DeploymentRecord(
    slug="acme-detect", owner="acme", name="Detect", project="vision", model="yolo26n",
    region="us", cpu=2, memory_gi=4, metadata={"ünï": [1, {"x": None}]},
))
store.update("acme-detect", redeploy=True, cpu=3)
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # right after the write returns: no close, no checkpoint
print("survived", flush=True)
"""


def test_a_record_survives_a_sigkill_right_after_create(path: Path):
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout == "written\n"
    # Killed before any close: the writes are in the write-ahead log, which the next open reads.
    assert Path(f"{path}-wal").stat().st_size > 0

    store = DeploymentStore(path)
    try:
        found = store.get("acme-detect")
        assert found is not None
        assert (found.cpu, found.generation, found.metadata) == (3, 2, {"ünï": [1, {"x": None}]})
        assert store.all() == [found]
    finally:
        store.close()
