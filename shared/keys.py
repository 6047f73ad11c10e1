"""API keys: `ul_` + 40 hex characters, stored only as SHA-256 hashes in a JSON file.

The file (a mounted Secret on Kubernetes) holds `{"keys": [{name, hash, prefix, created,
models, rate_limit, owner, scope}]}`. The CLI writes it atomically; `KeyRing` re-reads it when it
changes, so the running service sees new and revoked keys within seconds, without a restart.
A record written before keys had an owner and a scope reads as owner `default`, scope `predict`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast, get_args

from shared.digests import sha256_hex
from shared.errors import ApiError

KEY_PATTERN = re.compile(r"^ul_[0-9a-f]{40}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # one token: `keys list` is TSV
# A key's owner is the workspace it acts for, and the official SDK puts it in URL paths
# (`/api/deployments/{owner}/...`): a lower-case slug as Platform (and GitHub) usernames are,
# 1-39 letters, digits or '-', not starting with '-'. Safe in a path unescaped, one TSV token.
OWNER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}$")
DEFAULT_OWNER = "default"
# `predict`: every predict, info and listing route. `deploy`: those too, and creating, updating
# and deleting dedicated deployments.
Scope = Literal["predict", "deploy"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
DEFAULT_SCOPE: Scope = "predict"
PREFIX_LEN = 10  # "ul_" + 7 hex: enough to tell keys apart in a listing, useless to an attacker
REFRESH_S = 1.0  # how often a KeyRing looks at the store: well inside the 5 s the issue allows
# RFC 6750: a 401 names the scheme it wants.
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="yolo-endpoints"'}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRecord:
    name: str
    hash: str
    prefix: str
    created: str
    models: tuple[str, ...] | None = None  # None: every model
    # Requests per rate-limit window for this key; None: the application's limit.
    rate_limit: int | None = None
    owner: str = DEFAULT_OWNER
    scope: Scope = DEFAULT_SCOPE

    @property
    def id(self) -> str:
        """A stable, non-secret identity for rate limiting and logs."""
        return self.hash[:16]

    def allows(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


def generate_key() -> str:
    return "ul_" + secrets.token_hex(20)


def hash_key(key: str) -> str:
    return sha256_hex(key.encode())


def read_store(path: Path) -> list[KeyRecord]:
    """The store's keys; ValueError for a file that is not exactly the store's shape."""
    if not path.exists():
        return []
    with open(path) as f:
        raw = json.load(f)
    if not isinstance(raw, dict) or not isinstance(raw.get("keys", []), list):
        raise ValueError('the key store must be {"keys": [...]}')
    return [_record(entry) for entry in raw.get("keys", [])]


def _text(entry: dict, field: str) -> str:
    value = entry.get(field)
    if not isinstance(value, str) or not value:
        raise ValueError(f"a key record's {field!r} must be a non-empty string")
    return value


def _record(entry: object) -> KeyRecord:
    # Valid JSON of the wrong shape (hand edits, a tool writing another format) must be refused
    # here, as a whole, rather than surface per request as a TypeError deep in authentication.
    if not isinstance(entry, dict):
        raise ValueError("each key record must be an object")
    models = entry.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise ValueError("a key record's 'models' must be null or a list of model IDs")
    digest = _text(entry, "hash")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError("a key record's 'hash' must be 64 lower-case hex digits")
    return KeyRecord(
        name=_text(entry, "name"),
        hash=digest,
        prefix=_text(entry, "prefix"),
        created=_text(entry, "created"),
        models=tuple(models) if models is not None else None,
        rate_limit=_positive_int_or_none(entry.get("rate_limit")),
        # Absent in records written before keys had them: the defaults. Present, they must be
        # valid (null included is refused).
        owner=_owner(entry.get("owner", DEFAULT_OWNER)),
        scope=_scope(entry.get("scope", DEFAULT_SCOPE)),
    )


def _positive_int_or_none(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"rate_limit must be a positive integer, got {value!r}")
    return value


def _owner(value: object) -> str:
    if not isinstance(value, str) or not OWNER_PATTERN.fullmatch(value):
        raise ValueError(
            f"owner {value!r}: use 1-39 lower-case letters, digits or '-', not starting with '-'"
        )
    return value


def _scope(value: object) -> Scope:
    if not isinstance(value, str) or value not in SCOPES:
        raise ValueError(f"scope {value!r}: use one of {', '.join(SCOPES)}")
    return cast(Scope, value)


def write_store(path: Path, records: list[KeyRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "keys": [
            {
                "name": r.name,
                "hash": r.hash,
                "prefix": r.prefix,
                "created": r.created,
                "models": list(r.models) if r.models is not None else None,
                "rate_limit": r.rate_limit,
                "owner": r.owner,
                "scope": r.scope,
            }
            for r in records
        ]
    }
    # Write, fsync, rename, fsync the folder: a reader never sees half a file, and a crash or
    # power cut leaves the old store or the new one, never an empty file under the real name.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def _store_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the store, so two concurrent `keys create` both land."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def create_key(
    path: Path,
    name: str,
    models: list[str] | None = None,
    rate_limit: int | None = None,
    owner: str = DEFAULT_OWNER,
    scope: Scope = DEFAULT_SCOPE,
) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    rate_limit = _positive_int_or_none(rate_limit)
    owner, scope = _owner(owner), _scope(scope)
    with _store_lock(path):
        records = read_store(path)
        if any(r.name == name for r in records):
            raise ValueError(f"a key named {name!r} already exists")
        key = generate_key()
        records.append(
            KeyRecord(
                name=name,
                hash=hash_key(key),
                prefix=key[:PREFIX_LEN],
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                models=tuple(models) if models else None,
                rate_limit=rate_limit,
                owner=owner,
                scope=scope,
            )
        )
        write_store(path, records)
    return key


def revoke_key(path: Path, name: str) -> bool:
    with _store_lock(path):
        records = read_store(path)
        kept = [r for r in records if r.name != name]
        if len(kept) == len(records):
            return False
        write_store(path, kept)
    return True


def bearer_token(header: str | None) -> str:
    """The key from an Authorization header, or a 401 saying what is wrong with it."""
    if not header:
        raise ApiError(
            401, "Unauthorized: missing Authorization header (Bearer API key)", dict(CHALLENGE)
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not KEY_PATTERN.match(token):
        raise ApiError(
            401, "Unauthorized: expected 'Authorization: Bearer ul_<40 hex>'", dict(CHALLENGE)
        )
    return token


class KeyRing:
    """The keys a process accepts, refreshed from the store file when it changes."""

    def __init__(self, path: str | Path, refresh_s: float = REFRESH_S):
        self.path = Path(path)
        self.refresh_s = refresh_s
        self._records: list[KeyRecord] = []
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        try:
            st = self.path.stat()
            # Size too: file times tick coarsely, and a replaced file may reuse the inode number.
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            self._records, self._stamp = [], None
            return
        if stamp != self._stamp:
            try:
                self._records = read_store(self.path)
            except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
                # A hand-edited store with a typo must not turn every request into a 500: keep
                # the last good keys and try again on the next refresh.
                logger.error(
                    "key store %s unreadable, keeping the last good keys: %s",
                    self.path,
                    type(exc).__name__,
                )
                return
            self._stamp = stamp

    def fresh_for(self, now: float) -> float:
        """Seconds until this ring next looks at the store: what it answers stands until then."""
        return max(0.0, self.refresh_s - (now - self._checked))

    def authenticate(self, header: str | None) -> KeyRecord:
        token = bearer_token(header)
        self._refresh()
        digest = hash_key(token)
        match = None
        # Compare against every record in constant time per comparison; no early exit.
        for record in self._records:
            if hmac.compare_digest(record.hash, digest):
                match = record
        if match is None:
            raise ApiError(401, "Unauthorized: invalid or revoked API key", dict(CHALLENGE))
        return match
