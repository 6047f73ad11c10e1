"""SHA-256 hex digests: of key text (the key store), of weights files (checks, cache names)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20  # weights files are tens of MB: hash them a block at a time, never whole


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
