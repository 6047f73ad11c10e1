"""Background clients for tests that change a running service under load (faults, redeploys)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import requests


def is_json_error(response: requests.Response) -> bool:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str) and bool(body["error"])


@dataclass
class Outcome:
    sent: float  # time.monotonic() when sent
    done: float
    status: int  # 0: no HTTP answer at all (connection error or client timeout)
    json_error: bool
    detail: str  # the response body, or the client's exception
    retry_after: str | None = None  # the Retry-After header, if any

    @property
    def model(self) -> str | None:
        """The weights file that answered (`metadata.model`), for a 200."""
        return json.loads(self.detail)["metadata"]["model"] if self.status == 200 else None


class Traffic:
    """Clients sending predict requests back to back until stopped; every outcome is kept."""

    def __init__(
        self,
        server,
        path: str,
        image: bytes,
        clients: int,
        timeout: float = 60,
        key: str | None = None,
        **fields: str,
    ):
        self.url, self.headers = server.url(path), server.headers(key)
        self.files = {"file": ("image.jpg", image)}
        self.fields, self.timeout = fields, timeout
        self.stop = threading.Event()
        self.outcomes: list[Outcome] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                r = requests.post(
                    self.url,
                    headers=self.headers,
                    files=self.files,
                    data=self.fields,
                    timeout=self.timeout,
                )
                outcome = Outcome(
                    sent,
                    time.monotonic(),
                    r.status_code,
                    is_json_error(r),
                    r.text,
                    r.headers.get("Retry-After"),
                )
            except requests.RequestException as exc:
                outcome = Outcome(sent, time.monotonic(), 0, False, repr(exc))
            self.outcomes.append(outcome)

    def served_after(self, t: float) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.sent > t and o.status == 200]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 10)
