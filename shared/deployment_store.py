"""The API-created deployments, one row each in an embedded SQLite database.

The database is the source of truth for them: Serve's applications are what the control plane
(deployments/control_plane.py) makes of these rows, and after a full stop every row is deployed
again as it was left. Writes are durable when they return (`synchronous=FULL`, one transaction
each), so a control plane killed at any point loses nothing it has answered. Plain sqlite3,
no Ray: the control plane calls it from a worker thread, so one lock serialises the connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

# What the owner asked for: the control plane makes Serve match it. `deleted` is a tombstone
# kept until Serve has let go of the application, so a restart mid-delete finishes the delete.
Desired = Literal["running", "stopped", "deleted"]
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    slug TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    project TEXT NOT NULL,
    model TEXT NOT NULL,
    region TEXT NOT NULL,
    cpu INTEGER NOT NULL,
    memory_gi INTEGER NOT NULL,
    desired TEXT NOT NULL CHECK (desired IN ('running', 'stopped', 'deleted')),
    failure TEXT,
    metadata TEXT NOT NULL,
    generation INTEGER NOT NULL,
    deployed_generation INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""


class SlugTaken(Exception):
    """Another deployment already has this slug."""


@dataclass(frozen=True)
class DeploymentRecord:
    slug: str  # the deployment's ID, Serve application name and route (/endpoints/{slug})
    owner: str  # the workspace of the key that created it: only its keys reach it
    name: str  # display name
    project: str  # kept as the Platform's metadata: registry models belong to no project
    model: str  # registry model ID
    region: str  # as requested; the deployment runs on this cluster whatever it says
    cpu: int  # per replica
    memory_gi: int  # per replica
    desired: Desired = "running"
    # Why Serve could not realise it (e.g. no node fits its resources): it stays failed, its
    # application removed, until the owner starts, resizes or replaces it.
    failure: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Bumped by every change Serve must see; `deployed_generation` is the one last handed to
    # Serve, so a restarted control plane redeploys only what changed, not everything.
    generation: int = 1
    deployed_generation: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


_COLUMNS = tuple(f.name for f in fields(DeploymentRecord))
# What `update` may change; the rest is the record's identity or kept by the store itself.
_CHANGEABLE = set(_COLUMNS) - {"slug", "owner", "created_at", "updated_at", "generation"}


def _row(record: DeploymentRecord) -> tuple[Any, ...]:
    values = asdict(record)
    values["metadata"] = json.dumps(record.metadata, separators=(",", ":"))
    return tuple(values[c] for c in _COLUMNS)


def _record(row: sqlite3.Row) -> DeploymentRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["metadata"] = json.loads(values["metadata"])
    return DeploymentRecord(**values)


class DeploymentStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection for the process, used from worker threads under the lock.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                self._db.close()  # untouched: a newer release's records are not ours to change
                raise RuntimeError(
                    f"{path}: schema version {version} is newer than this code's "
                    f"{SCHEMA_VERSION}; upgrade the code rather than lose records"
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, record: DeploymentRecord) -> DeploymentRecord:
        """`record`, stored with its times set; SlugTaken if the slug is anyone's already (a
        deleted one's too, until its application is gone)."""
        now = time.time()
        record = replace(record, created_at=now, updated_at=now)
        marks = ", ".join("?" * len(_COLUMNS))
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO deployments ({', '.join(_COLUMNS)}) VALUES ({marks})",
                    _row(record),
                )
            except sqlite3.IntegrityError as exc:
                if exc.sqlite_errorname != "SQLITE_CONSTRAINT_PRIMARYKEY":
                    raise  # a record no caller should build (a CHECK or NOT NULL): a bug
                raise SlugTaken(record.slug) from exc
        return record

    def get(self, slug: str) -> DeploymentRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM deployments WHERE slug = ?", (slug,)
            ).fetchone()
        return _record(row) if row else None

    def all(self) -> list[DeploymentRecord]:
        """Every record, tombstones included, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM deployments ORDER BY created_at, slug"
            ).fetchall()
        return [_record(row) for row in rows]

    def update(self, slug: str, /, *, redeploy: bool, **changes: Any) -> DeploymentRecord:
        """The record with `changes` stored (KeyError if there is none). `redeploy`: the change
        is one Serve must see (bumps the generation); metadata or a display name is not."""
        fixed = set(changes) - _CHANGEABLE
        if fixed:
            raise ValueError(f"cannot change {sorted(fixed)}")
        # Read and write in one transaction that holds the write lock from its start: another
        # process on the file (a control plane replica still shutting down) cannot interleave.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM deployments WHERE slug = ?", (slug,)
                ).fetchone()
                if row is None:
                    raise KeyError(slug)
                current = _record(row)
                generation = current.generation + 1 if redeploy else current.generation
                record = replace(current, **changes, generation=generation, updated_at=time.time())
                assignments = ", ".join(f"{c} = ?" for c in _COLUMNS[1:])
                self._db.execute(
                    f"UPDATE deployments SET {assignments} WHERE slug = ?",
                    (*_row(record)[1:], slug),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return record

    def mark_deployed(self, slug: str, generation: int) -> None:
        """Serve was handed `generation` of this record (no change to its update time)."""
        with self._lock:
            self._db.execute(
                "UPDATE deployments SET deployed_generation = ? WHERE slug = ?", (generation, slug)
            )

    def delete(self, slug: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM deployments WHERE slug = ?", (slug,))
        return cursor.rowcount > 0
