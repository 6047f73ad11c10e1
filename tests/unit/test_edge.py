"""The proxy's edge guard on fake ASGI apps, and once on a real uvicorn (no Ray)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import uvicorn
import yaml

from deployments import edge as edge_module
from deployments.edge import HELD_READ_BYTES, EdgeGuard, middlewares
from shared import holds
from shared.cluster import EDGE_ENV, ray_env
from shared.holds import Hold
from shared.limits import MB, body_cap
from shared.ratelimit import Decision
from shared.registry import PROJECT_ROOT

LIMIT = 1 * MB
CAP = body_cap(LIMIT)
CHUNK = 64 * 1024


def http_scope(headers: dict[str, str] | list[tuple[str, str]] = (), method: str = "POST") -> dict:
    items = headers.items() if isinstance(headers, dict) else headers
    return {
        "type": "http",
        "method": method,
        "path": "/api/models/m/predict",
        "headers": [(k.lower().encode(), v.encode()) for k, v in items],
    }


class Client:
    """The client side of one request: `receive` hands out body messages and counts reads,
    `send` records the answer."""

    def __init__(self, messages: Iterator[dict] | list[dict] = ()) -> None:
        self.messages = iter(messages)
        self.reads = 0
        self.read_bytes = 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        self.reads += 1
        message = next(self.messages, {"type": "http.disconnect"})
        self.read_bytes += len(message.get("body", b""))
        return message

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode().lower(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])

    def json(self) -> dict:
        assert self.headers["content-type"] == "application/json"
        assert int(self.headers["content-length"]) == len(self.body)
        assert self.headers["x-content-type-options"] == "nosniff"
        return json.loads(self.body)


def endless(size: int = CHUNK) -> Iterator[dict]:
    while True:
        yield {"type": "http.request", "body": b"x" * size, "more_body": True}


class App:
    """A downstream app that reads the whole body (and one message more), then answers."""

    def __init__(self, answer: list[dict] | None = None, raises: bool = False) -> None:
        self.calls = 0
        self.received: list[dict] = []
        self.answer = answer if answer is not None else ok_response()
        self.raises = raises

    async def __call__(self, scope: dict, receive, send) -> None:
        self.calls += 1
        if scope["type"] == "http" and any(k == b"content-length" for k, _ in scope["headers"]):
            while True:
                message = await receive()
                self.received.append(message)
                if not message.get("more_body", False):
                    break
            self.received.append(await receive())
        for message in self.answer:
            await send(message)
        if self.raises:
            raise RuntimeError("replica died")


def ok_response() -> list[dict]:
    return [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"a/b")]},
        {"type": "http.response.body", "body": b"ok"},
    ]


def plain(status: int, text: str, *extra: tuple[bytes, bytes]) -> list[dict]:
    headers = [[b"content-type", b"text/plain; charset=utf-8"], *map(list, extra)]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": text.encode()},
    ]


def run(app: App, scope: dict, client: Client) -> Client:
    guard = EdgeGuard(app, max_upload_bytes=LIMIT, max_video_bytes=4 * LIMIT)
    asyncio.run(guard(scope, client.receive, client.send))
    return client


# -- bodies ----------------------------------------------------------------------------------
def test_a_declared_length_over_the_cap_is_refused_unread() -> None:
    app = App()
    client = run(app, http_scope({"content-length": str(CAP + 1)}), Client(endless()))
    assert client.status == 413
    assert client.json() == {"error": "File too large: the limit is 1 MB"}
    assert client.headers["connection"] == "close"
    assert (app.calls, client.reads) == (0, 0)


@pytest.mark.parametrize(
    ("path", "video"),
    [
        ("/endpoints/yolo26n/predict", True),
        ("/api/deployments/me/yolo26n/predict", True),
        ("/endpoints/yolo26n/predict/", True),
        ("/api/models/yolo26n/predict", False),
        ("/endpoints/yolo26n/info", False),
        ("/endpoints/a/b/predict", False),
    ],
)
def test_routes_that_take_video_get_the_video_cap(path: str, video: bool) -> None:
    body = b"x" * (CAP + 1)  # over the image cap, within the video cap
    keyed = {"authorization": "Bearer ul_x", "content-type": "multipart/form-data; boundary=b"}
    scope = {**http_scope({**keyed, "content-length": str(len(body))}), "path": path}
    client = run(App(), scope, Client([{"type": "http.request", "body": body}]))
    assert client.status == (200 if video else 413)
    length = str(body_cap(4 * LIMIT) + 1)
    over = {**http_scope({**keyed, "content-length": length}), "path": path}
    refused = run(App(), over, Client(endless()))
    assert refused.status == 413
    assert refused.json()["error"].endswith("4 MB" if video else "1 MB")


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "multipart/form-data; boundary=b"},  # no key
        {"authorization": "Bearer ul_x", "content-type": "application/x-www-form-urlencoded"},
    ],
)
def test_the_video_cap_needs_a_key_and_multipart(headers: dict[str, str]) -> None:
    body = b"x" * (CAP + 1)
    scope = {**http_scope({**headers, "content-length": str(len(body))})}
    scope["path"] = "/endpoints/yolo26n/predict"
    assert run(App(), scope, Client([{"type": "http.request", "body": body}])).status == 413


@pytest.mark.parametrize(
    "headers",
    [
        {"content-length": "-5"},
        {"content-length": "12abc"},
        [("content-length", "10"), ("content-length", "11")],
        {"content-length": "10", "transfer-encoding": "chunked"},
        {"transfer-encoding": "gzip"},
    ],
)
def test_bad_framing_is_refused_unread(headers) -> None:
    app = App()
    client = run(app, http_scope(headers), Client(endless()))
    assert client.status == 400
    assert "Content-Length" in client.json()["error"]
    assert client.headers["connection"] == "close"
    assert (app.calls, client.reads) == (0, 0)


def test_a_chunked_body_past_the_cap_is_cut_off_at_the_first_chunk_past_it() -> None:
    app = App()
    client = run(app, http_scope({"transfer-encoding": "chunked"}), Client(endless()))
    assert client.status == 413 and client.json()["error"].startswith("File too large")
    assert client.headers["connection"] == "close"
    assert app.calls == 0
    assert CAP < client.read_bytes <= CAP + CHUNK


def test_a_body_longer_than_its_declared_length_is_cut_off_too() -> None:
    app = App()
    client = run(app, http_scope({"content-length": "1000"}), Client(endless(MB)))
    assert client.status == 413
    assert app.calls == 0
    assert client.read_bytes <= CAP + MB


def test_a_body_within_the_cap_is_replayed_exactly_then_the_disconnect() -> None:
    messages = [
        {"type": "http.request", "body": b"a" * CHUNK, "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"b" * (CAP - CHUNK), "more_body": False},
    ]
    app = App()
    client = run(app, http_scope({"content-length": str(CAP)}), Client(list(messages)))
    assert client.status == 200 and client.body == b"ok"
    assert app.received == [*messages, {"type": "http.disconnect"}]


def test_a_client_leaving_mid_body_gets_no_answer_and_the_app_no_call() -> None:
    body = {"type": "http.request", "body": b"x", "more_body": True}
    app = App()
    client = run(app, http_scope({"content-length": "100"}), Client([body]))
    assert (app.calls, client.sent) == (0, [])


@pytest.mark.parametrize(
    "scope",
    [http_scope(method="GET"), http_scope({"content-length": "0"}), {"type": "websocket"}],
)
def test_no_body_no_buffering_and_other_scopes_untouched(scope: dict) -> None:
    seen = []

    async def app(scope, receive, send) -> None:
        seen.append(receive)
        if scope["type"] == "http":
            for message in ok_response():
                await send(message)

    client = Client()
    asyncio.run(EdgeGuard(app, max_upload_bytes=LIMIT)(scope, client.receive, client.send))
    assert seen == [client.receive]  # the server's own receive, not a replay
    assert client.reads == 0


# -- errors on the way out -------------------------------------------------------------------
@pytest.mark.parametrize("raises", [False, True])
def test_an_app_that_never_answers_gets_a_json_503(raises: bool) -> None:
    client = run(App(answer=[], raises=raises), http_scope(method="GET"), Client())
    assert client.status == 503
    assert client.json() == {"error": "Service unavailable: retry shortly"}
    assert client.headers["retry-after"] == "1"


def test_an_app_failing_mid_response_still_fails() -> None:
    app = App(answer=ok_response()[:1], raises=True)
    with pytest.raises(RuntimeError):
        run(app, http_scope(method="GET"), Client())


@pytest.mark.parametrize(
    ("answer", "status", "error", "retry_after"),
    [
        (plain(500, "RayActorError: ..."), 503, "Service unavailable: retry shortly", "1"),
        (plain(404, "Path '/x' not found. Ping http://.../-/routes"), 404, "Not found", None),
        (plain(408, "Request abc timed out after 60s."), 504, "Timed out: retry shortly", None),
        (
            plain(503, "backpressure", (b"retry-after", b"7")),
            503,
            "Service unavailable: retry shortly",
            "7",
        ),
        (plain(503, "draining"), 503, "Service unavailable: retry shortly", "1"),
        (plain(405, "Method Not Allowed"), 405, "Method Not Allowed", None),
        (plain(400, "x" * 300), 400, "x" * 200, None),
    ],
)
def test_plain_text_errors_become_json(answer, status, error, retry_after) -> None:
    answer[0]["headers"].append([b"x-request-id", b"abc"])
    client = run(App(answer=answer), http_scope(method="GET"), Client())
    assert client.status == status
    assert client.json() == {"error": error}
    assert client.headers.get("retry-after") == retry_after
    assert client.headers["x-request-id"] == "abc"
    assert len(client.sent) == 2


def test_a_plain_text_error_in_pieces_is_joined_first() -> None:
    start, body = plain(418, "I'm a teapot")
    pieces = [
        start,
        {"type": "http.response.body", "body": body["body"][:3], "more_body": True},
        {"type": "http.response.body", "body": body["body"][3:]},
    ]
    client = run(App(answer=pieces), http_scope(method="GET"), Client())
    assert (client.status, client.json()) == (418, {"error": "I'm a teapot"})


def test_json_errors_and_streams_pass_through_untouched() -> None:
    json_404 = [
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"application/json")],
        },
        {"type": "http.response.body", "body": b'{"error": "Model not found"}'},
    ]
    stream = [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        },
        *({"type": "http.response.body", "body": b"%d" % i, "more_body": True} for i in range(5)),
        {"type": "http.response.body", "body": b""},
    ]
    for answer in (json_404, stream):
        expected = [dict(m) for m in answer]
        client = run(App(answer=answer), http_scope(method="GET"), Client())
        assert client.sent == expected


# -- on a real uvicorn: refusals close the connection ----------------------------------------
async def echo_length(scope: dict, receive, send) -> None:
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % size})


@pytest.fixture(scope="module")
def live_port() -> Iterator[int]:
    guard = EdgeGuard(echo_length, max_upload_bytes=64 * 1024)
    server = uvicorn.Server(uvicorn.Config(guard, log_level="critical", lifespan="off"))
    sock = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)


def exchange(port: int, head: bytes, body: Iterator[bytes]) -> tuple[bytes, int]:
    """Send `head` then `body` until the server cuts the connection; (everything read, sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sent = 0
        for piece in body:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        answer = b""
        try:
            while data := sock.recv(65536):  # b"": the server closed its side
                answer += data
        except ConnectionResetError:
            pass
        return answer, sent


POST = b"POST /x HTTP/1.1\r\nhost: t\r\n"


def test_uvicorn_closes_after_a_refusal_instead_of_reading_on(live_port: int) -> None:
    big = (b"x" * MB for _ in range(256))
    answer, sent = exchange(live_port, POST + b"content-length: 268435456\r\n\r\n", big)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.count(b"HTTP/1.1") == 1  # nothing of the body was taken for a request
    assert sent < 32 * MB  # what the socket buffers took before the close

    chunks = (b"%x\r\n%s\r\n" % (MB, b"x" * MB) for _ in range(256))
    answer, sent = exchange(live_port, POST + b"transfer-encoding: chunked\r\n\r\n", chunks)
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.count(b"HTTP/1.1") == 1
    assert sent < 32 * MB


def test_uvicorn_keeps_the_connection_for_a_body_within_the_cap(live_port: int) -> None:
    request = POST + b"content-length: 5\r\n\r\nhello"
    answer, _ = exchange(live_port, request * 2 + POST + b"connection: close\r\n\r\n", iter(()))
    assert answer.count(b"HTTP/1.1 200 ") == 3


# -- installed wherever a proxy starts -------------------------------------------------------
def test_the_callback_reads_the_limit_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("YOLO_MAX_UPLOAD_MB", "2")
    (middleware,) = middlewares()
    guard = middleware.cls(App(), *middleware.args, **middleware.kwargs)
    assert guard.limit(http_scope()).cap == body_cap(2 * MB)


def test_local_clusters_and_kubernetes_pods_install_the_guard(monkeypatch) -> None:
    for name in EDGE_ENV:
        monkeypatch.delenv(name, raising=False)
    env = ray_env()
    assert {name: env[name] for name in EDGE_ENV} == EDGE_ENV
    module, function = EDGE_ENV["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"].split(":")
    assert module == EdgeGuard.__module__ and function == middlewares.__name__

    manifest = yaml.safe_load((PROJECT_ROOT / "k8s" / "rayservice.yaml").read_text())
    cluster = manifest["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [group["template"] for group in cluster["workerGroupSpecs"]]
    for template in templates:
        for container in template["spec"]["containers"]:
            env = {e["name"]: e["value"] for e in container["env"]}
            assert EDGE_ENV.items() <= env.items(), container["name"]


def test_headers_that_steer_serve_itself_never_reach_the_proxy() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["headers"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    headers = [
        (b"authorization", b"Bearer x"),
        (b"x-request-timeout-seconds", b"0"),
        (b"x-request-disconnect-disabled", b"?1"),
        (b"serve_multiplexed_model_id", b"yolo26n"),
        (b"x-session-id", b"pin-me"),
        (b"x-yolo-edge", b"forged"),
    ]
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message) -> None:
        pass

    asyncio.run(EdgeGuard(app, max_upload_bytes=MB)(scope, receive, send))
    # ... and only the edge itself tells the ingress that it honours holds.
    assert seen == [[(b"authorization", b"Bearer x"), (b"x-yolo-edge", b"1")]]


# -- held rejections: answered here once the ingress says they hold ---------------------------
def held_429(seconds: float = 30.0) -> list[dict]:
    body = holds.json_body("Rate limited: 20 requests per 60 s per API key; retry in 30 s, ...")
    hold = holds.encode(Hold(429, seconds, "shared", Decision(False, 20, 0, 30, 30, 60.0)))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-ratelimit-limit", b"20"),
        (b"x-ratelimit-remaining", b"0"),
        (b"x-ratelimit-reset", b"30"),
        (b"retry-after", b"30"),
        (b"x-content-type-options", b"nosniff"),
        (holds.HOLD_HEADER, hold),
    ]
    return [
        {"type": "http.response.start", "status": 429, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


def small_body(size: int = 100) -> list[dict]:
    return [{"type": "http.request", "body": b"x" * size, "more_body": False}]


def keyed(key: str = "k", size: int = 100) -> dict:
    return http_scope({"authorization": f"Bearer {key}", "content-length": str(size)})


class HoldingGuard:
    def __init__(self, answer: list[dict]) -> None:
        self.app = App(answer=answer)
        self.counted: list[tuple[str, int]] = []
        self.guard = EdgeGuard(
            self.app,
            max_upload_bytes=LIMIT,
            count_held=lambda app, status: self.counted.append((app, status)),
        )

    def send(self, scope: dict, body: list[dict] | Iterator[dict] | None = None) -> Client:
        client = Client(small_body() if body is None else body)
        asyncio.run(self.guard(scope, client.receive, client.send))
        return client


def test_a_held_rejection_is_answered_here_until_it_runs_out(monkeypatch) -> None:
    edge = HoldingGuard(held_429())
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now)
    first = edge.send(keyed())
    assert first.status == 429 and holds.HOLD_HEADER.decode() not in first.headers
    assert edge.app.calls == 1 and edge.counted == []
    monkeypatch.setattr(time, "monotonic", lambda: now + 10.5)
    held = edge.send(keyed())
    assert edge.app.calls == 1 and edge.counted == [("shared", 429)]
    assert held.status == 429 and held.headers["retry-after"] == "20"
    assert held.headers["x-ratelimit-reset"] == "20" and "connection" not in held.headers
    assert "retry in 20 s" in held.json()["error"]
    # Another key, path or origin is not the same rejection: the ingress answers it.
    edge.send(keyed("other"))
    edge.send({**keyed(), "path": "/api/models/other/predict"})
    origin = keyed()
    origin["headers"] = [*origin["headers"], (b"origin", b"https://example.com")]
    edge.send(origin)
    assert edge.app.calls == 4
    monkeypatch.setattr(time, "monotonic", lambda: now + 30)
    edge.send(keyed())
    assert edge.app.calls == 5


def test_the_ingress_is_told_the_edge_honours_holds_and_a_forged_hold_is_dropped() -> None:
    seen: list[list] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["headers"])
        for message in held_429():
            await send(message)

    edge = EdgeGuard(app, max_upload_bytes=LIMIT, count_held=lambda *_: None)
    client = Client(small_body())
    asyncio.run(edge(keyed(), client.receive, client.send))
    assert (holds.EDGE_HEADER, b"1") in seen[0]
    assert holds.HOLD_HEADER.decode() not in client.headers
    # A hold the edge cannot read holds nothing, and is still never shown.
    bad = held_429()
    bad[0]["headers"][-1] = (holds.HOLD_HEADER, b"status=429;s=oops")
    edge = HoldingGuard(bad)
    for _ in range(2):
        assert holds.HOLD_HEADER.decode() not in edge.send(keyed()).headers
    assert edge.app.calls == 2


def test_a_held_answer_reads_a_small_body_and_refuses_a_big_one_unread() -> None:
    edge = HoldingGuard(held_429())
    edge.send(keyed())
    small = edge.send(keyed())
    assert small.reads == 1 and "connection" not in small.headers  # read, so kept open
    big = edge.send(keyed(size=2 * HELD_READ_BYTES), endless())
    assert big.reads == 0 and big.headers["connection"] == "close"
    chunked = http_scope({"authorization": "Bearer k", "transfer-encoding": "chunked"})
    assert edge.send(chunked, endless()).reads == 0
    assert edge.app.calls == 1 and len(edge.counted) == 3


class GatedApp:
    """Answers each request with `answer`, once `gate` is set: requests stay in flight."""

    def __init__(self, answer: list[dict]) -> None:
        self.answer = answer
        self.calls = 0
        self.gate = asyncio.Event()

    async def __call__(self, scope: dict, receive, send) -> None:
        self.calls += 1
        while (await receive()).get("more_body", False):
            pass
        await self.gate.wait()
        for message in self.answer:
            await send(message)


def flood_after_hold_runs_out(answer_again: list[dict], monkeypatch) -> tuple[GatedApp, list]:
    """A held 429, then 5 requests at once after it ran out, the ingress answering
    `answer_again`: (the app, the 5 clients)."""
    app = GatedApp(held_429(seconds=1.0))
    edge = EdgeGuard(app, max_upload_bytes=LIMIT, count_held=lambda *_: None)
    now = [1000.0]
    # The edge's clock only: asyncio's own must keep running.
    monkeypatch.setattr(edge_module, "time", SimpleNamespace(monotonic=lambda: now[0]))

    async def scenario() -> list[Client]:
        app.gate.set()
        first = Client(small_body())
        await edge(keyed(), first.receive, first.send)
        now[0] += 2.0  # the hold ran out
        app.gate.clear()
        app.answer = answer_again
        clients = [Client(small_body()) for _ in range(5)]
        tasks = [asyncio.create_task(edge(keyed(), c.receive, c.send)) for c in clients]
        await asyncio.sleep(0.01)
        assert app.calls == 2  # one asks; the other four wait for its answer
        app.gate.set()
        await asyncio.gather(*tasks)
        return clients

    return app, asyncio.run(scenario())


def test_when_a_hold_runs_out_one_request_asks_again_for_all(monkeypatch) -> None:
    app, clients = flood_after_hold_runs_out(held_429(seconds=30.0), monkeypatch)
    assert app.calls == 2 and [c.status for c in clients] == [429] * 5


def test_a_key_no_longer_refused_is_not_held_back(monkeypatch) -> None:
    app, clients = flood_after_hold_runs_out(ok_response(), monkeypatch)
    # The asker's answer held nothing: the waiters went on to the ingress themselves.
    assert app.calls == 6 and [c.status for c in clients] == [200] * 5


def test_held_answers_are_paced_and_anyone_alone_is_answered_at_once() -> None:
    app = App(answer=held_429())
    edge = EdgeGuard(app, max_upload_bytes=LIMIT, count_held=lambda *_: None, held_answers_per_s=20)

    async def scenario() -> tuple[list[Client], list[float]]:
        first = Client(small_body())
        await edge(keyed(), first.receive, first.send)  # the ingress's answer, now held
        clients = [Client(small_body()) for _ in range(4)]
        done: list[float] = []

        async def one(client: Client) -> None:
            await edge(keyed(), client.receive, client.send)
            done.append(time.monotonic())

        started = time.monotonic()
        await asyncio.gather(*(one(c) for c in clients))
        return clients, [t - started for t in done]

    clients, after_s = asyncio.run(scenario())
    assert app.calls == 1 and [c.status for c in clients] == [429] * 4
    # 20 a second: the first goes at once, each next one a twentieth of a second later.
    assert after_s[0] < 0.05 and after_s[-1] >= 3 / 20 - 0.005
