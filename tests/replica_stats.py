"""A Ray driver in its own process that answers "what has this replica done" for the tests.

The test process never connects to Ray itself: a driver that is still connected when the
session's cluster stops (Serve's handle machinery can outlive `ray.shutdown()` and reconnect)
ends its whole process with exit status 1 a minute later, which would fail a green test run.
Here a stray driver only takes this child down.

Protocol: one line per question on stdin, "<app> <deployment>"; one line per answer on the
child's original stdout, "answer <base64 of the pickled `ModelServer.stats` dict>" (pickled, so
its int keys stay ints). Everything else the child prints (Ray writes to stdout too) goes to the
log, so an answer is never taken from a stray line.
"""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys
from pathlib import Path

ANSWER_TIMEOUT_S = 30
ANSWER = "answer "


class ReplicaStats:
    """The test side: a child driver started once per session."""

    def __init__(self, address: str, log: Path) -> None:
        env = dict(os.environ, RAY_ENABLE_AUTO_CONNECT="0")
        with log.open("ab") as stderr:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "tests.replica_stats", address],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        self.log = log

    def __call__(self, app: str, deployment: str = "Model") -> dict:
        assert self.child.stdin and self.child.stdout
        self.child.stdin.write(f"{app} {deployment}\n".encode())
        self.child.stdin.flush()
        line = self.child.stdout.readline().decode()
        if not line.startswith(ANSWER):
            raise RuntimeError(f"the stats driver answered {line[:80]!r}; see {self.log}")
        answer = pickle.loads(base64.b64decode(line[len(ANSWER) :]))
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        if self.child.stdin:
            self.child.stdin.close()
        try:
            self.child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()


def _serve(address: str) -> None:
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # from here on, whatever writes to stdout writes to the log
    import ray
    from ray import serve

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    for question in sys.stdin:
        app, deployment = question.split()
        try:
            handle = serve.get_deployment_handle(deployment, app_name=app)
            answer: object = handle.stats.remote().result(timeout_s=ANSWER_TIMEOUT_S)
        except Exception as error:  # handed to the test, which raises it
            answer = RuntimeError(f"stats of {app}/{deployment}: {error!r}")
        answers.write(ANSWER + base64.b64encode(pickle.dumps(answer)).decode() + "\n")
        answers.flush()
    ray.shutdown()


if __name__ == "__main__":
    _serve(sys.argv[1])
