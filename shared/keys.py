"""API keys: `ul_` + 40 hex characters, stored only as SHA-256 hashes in a JSON file.

The file (a mounted Secret on Kubernetes) holds `{"keys": [{name, hash, prefix, created,
models}]}`. The CLI writes it atomically; `KeyRing` re-reads it when it changes, so the running
service sees new and revoked keys within seconds, without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.errors import ApiError

KEY_PATTERN = re.compile(r"^ul_[0-9a-f]{40}$")
PREFIX_LEN = 10  # "ul_" + 7 hex: enough to tell keys apart in a listing, useless to an attacker


@dataclass(frozen=True)
class KeyRecord:
    name: str
    hash: str
    prefix: str
    created: str
    models: tuple[str, ...] | None = None  # None: every model

    @property
    def id(self) -> str:
        """A stable, non-secret identity for rate limiting and logs."""
        return self.hash[:16]

    def allows(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


def generate_key() -> str:
    return "ul_" + secrets.token_hex(20)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_store(path: Path) -> list[KeyRecord]:
    if not path.exists():
        return []
    with open(path) as f:
        raw = json.load(f)
    return [
        KeyRecord(
            name=k["name"],
            hash=k["hash"],
            prefix=k["prefix"],
            created=k["created"],
            models=tuple(k["models"]) if k.get("models") is not None else None,
        )
        for k in raw.get("keys", [])
    ]


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
            }
            for r in records
        ]
    }
    # Write-then-rename so a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def create_key(path: Path, name: str, models: list[str] | None = None) -> str:
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
        )
    )
    write_store(path, records)
    return key


def revoke_key(path: Path, name: str) -> bool:
    records = read_store(path)
    kept = [r for r in records if r.name != name]
    if len(kept) == len(records):
        return False
    write_store(path, kept)
    return True


def bearer_token(header: str | None) -> str:
    """The key from an Authorization header, or a 401 saying what is wrong with it."""
    if not header:
        raise ApiError(401, "Unauthorized: missing Authorization header (Bearer API key)")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not KEY_PATTERN.match(token):
        raise ApiError(401, "Unauthorized: expected 'Authorization: Bearer ul_<40 hex>'")
    return token


class KeyRing:
    """The keys a process accepts, refreshed from the store file when it changes."""

    def __init__(self, path: str | Path, refresh_s: float = 1.0):
        self.path = Path(path)
        self.refresh_s = refresh_s
        self._records: list[KeyRecord] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            self._records, self._stamp = [], None
            return
        if stamp != self._stamp:
            self._records = read_store(self.path)
            self._stamp = stamp

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
            raise ApiError(401, "Unauthorized: invalid or revoked API key")
        return match
