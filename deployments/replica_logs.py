"""A dedicated endpoint's log lines, read from every node through Ray's state API.

Serve writes each replica's log under `logs/serve/` of the node it runs on, so reading them
from files would see one node only; Ray's dashboard serves any node's log files (what `ray logs`
uses). Blocking HTTP calls: the ingress runs `read` in a thread. Only the last `TAIL_LINES` of
each file are read: the logs route pages through recent entries, it is not an archive.
"""

from __future__ import annotations

import re

import ray
from ray.util.state import get_log, list_logs, list_nodes

from shared.log_entries import LogEntry, parse_line

TAIL_LINES = 1000
# Files read per node: every rollout and every autoscaled replica leaves one; the newest are
# what a caller wants, but their names carry no time, so at most this many, whichever.
MAX_FILES = 32
TIMEOUT_S = 10


def read(app: str) -> list[LogEntry]:
    """Every parsable entry of application `app`'s replicas (its ingress and its model), on
    every alive node."""
    # This cluster's own address: without one, Ray's state API takes the cluster started last
    # on this machine, which need not be this one.
    address = ray.get_runtime_context().gcs_address
    entries: list[LogEntry] = []
    alive = [("state", "=", "ALIVE")]
    for node in list_nodes(address=address, filters=alive, timeout=TIMEOUT_S):
        files = list_logs(
            address=address,
            node_id=node.node_id,
            glob_filter=f"serve/replica_{app}_*",
            timeout=TIMEOUT_S,
        )
        own = re.compile(rf"(^|/)replica_{re.escape(app)}_(Ingress|Model)_[A-Za-z0-9]+\.log$")
        mine = [name for names in files.values() for name in names if own.search(name)]
        for name in sorted(mine)[:MAX_FILES]:
            path = name if "/" in name else f"serve/{name}"
            text = "".join(
                get_log(
                    address=address,
                    node_id=node.node_id,
                    filename=path,
                    tail=TAIL_LINES,
                    timeout=TIMEOUT_S,
                )
            )
            source = f"{node.node_id[:8]}/{path}"
            for number, line in enumerate(text.splitlines()):
                entry = parse_line(line, source, number)
                if entry is not None:
                    entries.append(entry)
    return entries
