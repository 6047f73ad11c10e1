"""A deployment's log lines as the official SDK's log entries, newest first, a page at a time.

Each dedicated endpoint's application logs in Ray Serve's JSON encoding (one object per line,
in `logs/serve/replica_<app>_<deployment>_<id>.log` on the replica's node). A line becomes an
entry with its time, the SDK's severity, its message (and the traceback's last line, never the
traceback itself: it stays in Serve's files), and, for Serve's access log lines of HTTP
requests, `httpRequest` {method, url, status, latencyMs}. Pages are cut by a token naming the
last entry handed out, so entries written in the meantime never shift a page.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

Severity = Literal[
    "DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"
]
SEVERITIES: tuple[str, ...] = get_args(Severity)
_LEVELS: dict[str, Severity] = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
    "FATAL": "CRITICAL",
}
# Serve's access log message (logging_utils.access_log_msg): "[client ]METHOD ROUTE STATUS Nms".
_ACCESS = re.compile(
    r"^(?:\S+ )?(?P<method>[A-Z]+) (?P<url>/\S*) (?P<status>\d{3}) (?P<ms>\d+(?:\.\d+)?)ms$"
)
MESSAGE_CHARS = 2000


class BadPageToken(ValueError):
    pass


@dataclass(frozen=True, order=True)
class LogEntry:
    time_ns: int
    source: str  # the file it came from: with `line`, what orders entries of one instant
    line: int
    severity: Severity
    message: str
    http: dict[str, Any] | None = None

    @property
    def cursor(self) -> tuple[int, str, int]:
        return self.time_ns, self.source, self.line

    def wire(self) -> dict[str, Any]:
        moment = datetime.fromtimestamp(self.time_ns / 1e9, UTC)
        entry: dict[str, Any] = {
            "timestamp": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "severity": self.severity,
            "message": self.message,
        }
        if self.http is not None:
            entry["httpRequest"] = self.http
        return entry


def parse_line(text: str, source: str, line: int) -> LogEntry | None:
    """One JSON log line as an entry; None for anything else (a text line, a torn write)."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("message"), str):
        return None
    time_ns = record.get("timestamp_ns")
    if not isinstance(time_ns, int):
        return None
    severity = _LEVELS.get(str(record.get("levelname", "")).upper(), "DEFAULT")
    message = record["message"]
    exc = record.get("exc_text")
    if isinstance(exc, str) and exc.strip():
        message = f"{message}: {exc.strip().splitlines()[-1]}"
    http = None
    access = _ACCESS.match(message) if record.get("serve_access_log") is not False else None
    if access and access["method"] != "CALL":
        http = {
            "method": access["method"],
            "url": access["url"],
            "status": int(access["status"]),
            "latencyMs": float(access["ms"]),
        }
    return LogEntry(time_ns, source, line, severity, message[:MESSAGE_CHARS], http)


def encode_token(entry: LogEntry) -> str:
    raw = json.dumps(list(entry.cursor), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[int, str, int]:
    try:
        padded = token + "=" * (-len(token) % 4)
        time_ns, source, line = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadPageToken(token) from exc
    if not (isinstance(time_ns, int) and isinstance(source, str) and isinstance(line, int)):
        raise BadPageToken(token)
    return time_ns, source, line


def page(
    entries: list[LogEntry],
    severities: frozenset[str] | None,
    limit: int,
    token: str | None,
) -> tuple[list[LogEntry], str | None]:
    """Newest first: up to `limit` entries older than the token's (all, without one), of the
    given severities; and the next page's token while more remain."""
    after = decode_token(token) if token else None
    chosen = sorted(
        (
            e
            for e in entries
            if (severities is None or e.severity in severities)
            and (after is None or e.cursor < after)
        ),
        reverse=True,
    )
    shown = chosen[:limit]
    more = len(chosen) > limit
    return shown, encode_token(shown[-1]) if more and shown else None
