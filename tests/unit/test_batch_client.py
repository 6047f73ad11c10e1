"""`yolo-endpoints predict`: the real client, run in-process through `shared.cli.main`, against
a small HTTP server started here that speaks the predict API at the HTTP level.

The fake answers each upload with the spec's response shape, computed from the upload (its
pixel size, its byte count), so each line of output is checkable against its own file; it can
be told to answer 429, 503, 500, 400 or 401, or to drop the connection. Timing assertions are
lower bounds only (a retry no sooner than the client was told to wait), which the client
controls whatever the machine's speed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from shared import batch_inputs, cli
from shared.assets import example_image
from shared.batch_annotated import task_of
from shared.batch_client import VIDEO_ON_SHARED
from shared.batch_http import Throttle, retry_after_s
from shared.batch_inputs import find_inputs

KEY = "ul_" + "5ec7e7" * 6 + "ab"  # what must never appear in any output
FAKE_VIDEO = b"\x00\x00\x00\x20ftypisom" + b"\x00" * 100  # only its name matters to the fake


@dataclass
class Request:
    path: str
    filename: str
    fields: dict[str, str]
    authorization: str
    size: int
    arrived: float  # time.monotonic() as the handler began
    status: int = 0
    answered: float = 0.0  # time.monotonic() just before the status line went out


@dataclass
class Behaviour:
    """What the fake does; counters count down as requests arrive."""

    rate_limited: int = 0  # answer 429 with Retry-After: 1 to the first N requests
    unavailable: int = 0  # then 503 to the next N
    unavailable_retry_after: str | None = None
    server_errors: int = 0  # then 500
    resets: int = 0  # then close the connection without an answer
    bad_names: set[str] = field(default_factory=set)  # 400 for these file names, always
    unauthorized: bool = False  # 401 for everything
    delay_s: float = 0.0  # before each 200
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, name: str) -> bool:
        with self.lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], str, bytes]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    filename, data = "", b""
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "file":
            filename, data = part.get_filename() or "", payload
        else:
            fields[name] = payload.decode()
    return fields, filename, data


def answer(filename: str, data: bytes) -> dict:
    """The spec's response; a video (by name) gives three processed frames."""
    if filename.endswith(".mp4"):
        shape, frames = [48, 64], [(0, 0.0), (2, 0.08), (4, 0.16)]
    else:
        with Image.open(io.BytesIO(data)) as image:
            shape, frames = [image.height, image.width], [None]
    h, w = shape
    images = []
    for frame in frames:
        entry: dict = {
            "shape": shape,
            "results": [
                {
                    "class": 0,
                    "name": "person",
                    "confidence": 0.9,
                    "box": {"x1": w / 4, "y1": h / 4, "x2": w / 2, "y2": h / 2},
                }
            ],
            "speed": {"preprocess": 1.0, "inference": 2.0, "postprocess": 0.5},
            "bytes": len(data),  # not the API's: lets each line be matched to its file
        }
        if frame is not None:
            entry["frame"], entry["timestamp"] = frame
        images.append(entry)
    metadata = {
        "imageCount": len(images),
        "functionTimeCall": 0.01,
        "model": "yolo26n.pt",
        "version": {"ultralytics": "8.4.14", "python": "3.11.7"},
        "task": "detect",
        "classNames": ["person"],
    }
    return {"images": images, "metadata": metadata}


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        arrived = time.monotonic()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        fields, filename, data = parse_multipart(self.headers.get("Content-Type", ""), body)
        request = Request(
            path=self.path,
            filename=filename,
            fields=fields,
            authorization=self.headers.get("Authorization", ""),
            size=len(data),
            arrived=arrived,
        )
        behaviour = self.server.behaviour
        with behaviour.lock:
            behaviour.requests.append(request)
        if not self.path.endswith("/predict"):
            self._send(request, 404, {"error": "Not found"})
        elif behaviour.unauthorized:
            self._send(request, 401, {"error": "Invalid API key"})
        elif behaviour.take("rate_limited"):
            self._send(request, 429, {"error": "Rate limit exceeded"}, {"Retry-After": "1"})
        elif behaviour.take("unavailable"):
            headers = {}
            if behaviour.unavailable_retry_after:
                headers["Retry-After"] = behaviour.unavailable_retry_after
            self._send(request, 503, {"error": "Service unavailable"}, headers)
        elif behaviour.take("server_errors"):
            self._send(request, 500, {"error": "Internal server error"})
        elif behaviour.take("resets"):
            request.status = -1
            self.close_connection = True  # no status line at all: the client sees a reset
        elif filename in behaviour.bad_names:
            self._send(request, 400, {"error": "Invalid image"})
        else:
            time.sleep(behaviour.delay_s)
            self._send(request, 200, answer(filename, data))

    def _send(self, request: Request, status: int, body: dict, headers: dict | None = None):
        payload = json.dumps(body).encode()
        request.status, request.answered = status, time.monotonic()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.behaviour = Behaviour()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def requests(self) -> list[Request]:
        return self.behaviour.requests


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder `data` in the working directory: images at two depths, a PNG, and what a walk
    must skip (hidden files and folders, a text file)."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "c").mkdir()
    (data / ".cache").mkdir()
    shutil.copy(example_image("bus.jpg"), data / "b.jpg")
    shutil.copy(example_image("zidane.jpg"), data / "a" / "zidane.jpg")
    Image.open(example_image("bus.jpg")).resize((160, 120)).save(data / "c" / "small.png")
    shutil.copy(example_image("bus.jpg"), data / ".cache" / "x.jpg")
    shutil.copy(example_image("bus.jpg"), data / ".hidden.jpg")
    (data / "notes.txt").write_text("not an image")
    return data


EXPECTED = ["data/a/zidane.jpg", "data/b.jpg", "data/c/small.png"]


def predict(*argv: str, url: str | None = None, key: str | None = KEY) -> int:
    args = ["predict", *argv]
    if url:
        args += ["--url", url]
    if key:
        args += ["--key", key]
    return cli.main(args)


def lines(path: str | Path = "results.jsonl") -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_folders_are_walked_sorted_and_each_image_gets_its_line(
    server: FakeServer, images: Path, capsys
) -> None:
    code = predict(
        "data",
        "--model",
        "yolo26n",
        "--concurrency",
        "1",
        "--conf",
        "0.4",
        "--iou",
        "0.5",
        "--imgsz",
        "320",
        url=server.url,
    )
    assert code == 0
    out = lines()
    assert [line["path"] for line in out] == EXPECTED
    for line in out:
        path = Path(line["path"])
        with Image.open(path) as image:
            assert line["image"]["shape"] == [image.height, image.width]
        assert line["image"]["bytes"] == path.stat().st_size
        assert set(line) == {"path", "image"}  # no frame or timestamp for images
        assert line["image"]["results"][0]["name"] == "person"
    assert [r.path for r in server.requests] == ["/api/models/yolo26n/predict"] * 3
    assert [r.filename for r in server.requests] == ["zidane.jpg", "b.jpg", "small.png"]
    assert {r.authorization for r in server.requests} == {f"Bearer {KEY}"}
    assert all(r.fields == {"conf": "0.4", "iou": "0.5", "imgsz": "320"} for r in server.requests)
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary.startswith("3 done (3 images), 0 skipped, 0 failed in ")
    assert summary.endswith(" images/s")


def test_named_files_are_sent_as_given_and_a_file_named_twice_once(
    server: FakeServer, images: Path
) -> None:
    absolute = str(images / "b.jpg")
    code = predict(absolute, "data/c", absolute, "--model", "m", url=server.url)
    assert code == 0
    assert sorted(line["path"] for line in lines()) == sorted([absolute, "data/c/small.png"])
    assert len(server.requests) == 2


def test_429_waits_retry_after_and_holds_back_every_worker(
    server: FakeServer, images: Path
) -> None:
    # Each 200 takes 0.5 s, so the first two files are in flight together, and the third and
    # fourth are sent only after the client has had the first request's 429 for that long.
    shutil.copy(example_image("bus.jpg"), images / "d.jpg")
    server.behaviour.rate_limited = 1
    server.behaviour.delay_s = 0.5
    code = predict("data", "--model", "m", "--concurrency", "2", url=server.url)
    assert code == 0
    assert sorted(line["path"] for line in lines()) == sorted([*EXPECTED, "data/d.jpg"])
    (limited,) = [r for r in server.requests if r.status == 429]
    retry = next(r for r in server.requests if r.filename == limited.filename and r.status == 200)
    assert retry.arrived - limited.answered >= 1.0
    later = [r for r in server.requests if r.filename in ("small.png", "d.jpg")]
    assert len(later) == 2
    assert all(r.arrived - limited.answered >= 1.0 for r in later)


def test_503_is_retried_with_backoff_and_retry_after_is_honoured(
    server: FakeServer, images: Path
) -> None:
    server.behaviour.unavailable = 2
    assert predict("data/b.jpg", "--model", "m", url=server.url) == 0
    first, second, third = server.requests
    assert [r.status for r in server.requests] == [503, 503, 200]
    # Backoff: at least half of 0.5 s, then of 1 s (the jitter only ever shortens it by half).
    assert second.arrived - first.answered >= 0.25
    assert third.arrived - second.answered >= 0.5

    server.behaviour.requests.clear()
    server.behaviour.unavailable = 1
    server.behaviour.unavailable_retry_after = "1"
    assert predict("data/c/small.png", "--model", "m", url=server.url) == 0
    first, second = server.requests
    assert second.arrived - first.answered >= 1.0


def test_500_and_dropped_connections_are_retried(server: FakeServer, images: Path) -> None:
    server.behaviour.server_errors = 1
    server.behaviour.resets = 1
    assert predict("data/b.jpg", "--model", "m", url=server.url) == 0
    assert [r.status for r in server.requests] == [500, -1, 200]
    assert [line["path"] for line in lines()] == ["data/b.jpg"]


def test_retries_run_out_and_the_file_fails(server: FakeServer, images: Path, capsys) -> None:
    server.behaviour.unavailable = 100
    assert predict("data/b.jpg", "--model", "m", "--retries", "1", url=server.url) == 1
    assert len(server.requests) == 2
    assert lines() == [{"path": "data/b.jpg", "error": "Service unavailable", "status": 503}]
    assert "data/b.jpg: Service unavailable" in capsys.readouterr().err


def test_400_fails_at_once_and_is_listed(server: FakeServer, images: Path, capsys) -> None:
    server.behaviour.bad_names = {"b.jpg"}
    assert predict("data", "--model", "m", url=server.url) == 1
    bad = [r for r in server.requests if r.filename == "b.jpg"]
    assert len(bad) == 1  # no retry
    out = {line["path"]: line for line in lines()}
    assert out["data/b.jpg"] == {"path": "data/b.jpg", "error": "Invalid image", "status": 400}
    assert all("image" in out[p] for p in EXPECTED if p != "data/b.jpg")
    err = capsys.readouterr().err
    assert "failures:\n  data/b.jpg: Invalid image\n" in err
    assert err.splitlines()[-1].startswith("2 done (2 images), 0 skipped, 1 failed in ")


def test_resume_skips_done_paths_and_retries_failed_ones(
    server: FakeServer, images: Path, capsys
) -> None:
    server.behaviour.bad_names = {"b.jpg"}
    assert predict("data", "--model", "m", url=server.url) == 1
    capsys.readouterr()
    # An interrupted run may leave half a line behind: it is ignored, and not joined onto.
    with open("results.jsonl", "a") as file:
        file.write('{"path": "data/c/sm')
    server.behaviour.bad_names = set()
    server.behaviour.requests.clear()
    assert predict("data", "--model", "m", url=server.url) == 0
    assert [r.filename for r in server.requests] == ["b.jpg"]
    err = capsys.readouterr().err
    assert "skipping 2 files already done in results.jsonl" in err
    assert err.splitlines()[-1].startswith("1 done (1 images), 2 skipped, 0 failed in ")
    text = Path("results.jsonl").read_text().splitlines()
    assert text[-2] == '{"path": "data/c/sm'
    assert json.loads(text[-1])["path"] == "data/b.jpg"


def test_a_video_with_model_fails_without_a_request(
    server: FakeServer, images: Path, capsys
) -> None:
    (images / "clip.mp4").write_bytes(FAKE_VIDEO)
    assert predict("data", "--model", "m", url=server.url) == 1
    assert "clip.mp4" not in [r.filename for r in server.requests]
    assert len(server.requests) == 3
    failed = [line for line in lines() if "error" in line]
    assert failed == [{"path": "data/clip.mp4", "error": VIDEO_ON_SHARED, "status": None}]
    assert "dedicated endpoint" in capsys.readouterr().err


def test_a_video_to_an_endpoint_gives_a_line_per_frame(
    server: FakeServer, images: Path, capsys
) -> None:
    (images / "clip.mp4").write_bytes(FAKE_VIDEO)
    code = predict(
        "data/clip.mp4", "data/b.jpg", "--endpoint", "cam", "--vid-stride", "2", url=server.url
    )
    assert code == 0
    assert {r.path for r in server.requests} == {"/endpoints/cam/predict"}
    video = next(r for r in server.requests if r.filename == "clip.mp4")
    image = next(r for r in server.requests if r.filename == "b.jpg")
    assert video.fields == {"vid_stride": "2"} and video.size == len(FAKE_VIDEO)
    assert image.fields == {}  # vid_stride goes with videos only
    frames = [line for line in lines() if line["path"] == "data/clip.mp4"]
    assert [(f["frame"], f["timestamp"]) for f in frames] == [(0, 0.0), (2, 0.08), (4, 0.16)]
    assert all(f["image"]["frame"] == f["frame"] for f in frames)
    assert capsys.readouterr().err.splitlines()[-1].startswith("2 done (4 images), ")


@pytest.mark.parametrize("suffix", ["/custom/predict", "/custom", "/custom/"])
def test_endpoint_given_as_a_url_needs_no_url(server: FakeServer, images: Path, suffix) -> None:
    assert predict("data/b.jpg", "--endpoint", server.url + suffix) == 0
    assert [r.path for r in server.requests] == ["/custom/predict"]


def test_with_many_workers_every_file_is_sent_exactly_once(
    server: FakeServer, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    for i in range(40):
        sub = folder / f"part{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        name = "bus.jpg" if i % 2 else "zidane.jpg"
        shutil.copy(example_image(name), sub / f"{i:03d}.jpg")
    server.behaviour.delay_s = 0.01
    server.behaviour.unavailable = 3  # some retries in the mix
    out = tmp_path / "out.jsonl"
    code = predict(
        str(folder), "--model", "m", "--concurrency", "8", "--out", str(out), url=server.url
    )
    assert code == 0
    written = lines(out)
    assert len(written) == 40 and len({line["path"] for line in written}) == 40
    assert all(Path(line["path"]).stat().st_size == line["image"]["bytes"] for line in written)
    assert len([r for r in server.requests if r.status == 200]) == 40


def test_the_key_is_never_printed_and_a_401_stops_the_run(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(30):
        shutil.copy(example_image("zidane.jpg"), folder / f"{i:02d}.jpg")
    monkeypatch.setenv("YOLO_ENDPOINTS_KEY", KEY)
    server.behaviour.unauthorized = True
    out = tmp_path / "out.jsonl"
    code = predict(
        str(folder),
        "--model",
        "m",
        "--concurrency",
        "2",
        "--out",
        str(out),
        "--progress",
        url=server.url,
        key=None,
    )
    assert code == 1
    assert {r.authorization for r in server.requests} == {f"Bearer {KEY}"}
    assert len(server.requests) < 30  # not one 401 per file
    captured = capsys.readouterr()
    assert "Invalid API key" in captured.err and "stopped" in captured.err
    assert KEY not in captured.out + captured.err + out.read_text()


def test_out_dash_writes_json_lines_to_stdout(server: FakeServer, images: Path, capsys) -> None:
    assert predict("data/b.jpg", "--model", "m", "--out", "-", url=server.url) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["path"] == "data/b.jpg"
    assert not Path("results.jsonl").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data/nope.jpg", "--model", "m"], "no such file or folder: data/nope.jpg"),
        (["data/notes.txt", "data", "--endpoint", "e", "--key", ""], "API key is required"),
        (["data", "--model", "m", "--url", ""], "--url is required"),
        (["data", "--model", "m", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["data", "--model", "m", "--conf", "25"], "--conf must be between 0 and 1"),
        (["data", "--model", "m", "--url", "ftp://x"], "--url must be an http(s) URL"),
    ],
)
def test_usage_errors_exit_2_before_anything_is_sent(
    server: FakeServer, images: Path, capsys, monkeypatch, argv, message
) -> None:
    monkeypatch.delenv("YOLO_ENDPOINTS_KEY", raising=False)
    args = ["predict", *argv]
    if "--url" not in argv:
        args += ["--url", server.url]
    if "--key" not in argv:
        args += ["--key", KEY]
    with pytest.raises(SystemExit) as exit:
        cli.main(args)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
    assert server.requests == []
    assert not Path("results.jsonl").exists()


def test_a_folder_without_images_is_a_usage_error(server: FakeServer, tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit:
        predict(str(tmp_path / "empty"), "--model", "m", url=server.url)
    assert exit.value.code == 2
    assert "found no images or videos" in capsys.readouterr().err


def test_annotated_images_have_the_inputs_size(server: FakeServer, images: Path) -> None:
    pytest.importorskip("shared.annotate")
    (images / "clip.mp4").write_bytes(FAKE_VIDEO)
    code = predict("data", "--endpoint", "e", "--annotated", "data/drawn", url=server.url)
    assert code == 0
    for path in EXPECTED:
        drawn = Path("data/drawn") / (path.removeprefix("data/") + ".jpg")
        with Image.open(drawn) as picture, Image.open(path) as original:
            assert picture.format == "JPEG"
            assert picture.size == original.size
    assert not Path("data/drawn/clip.mp4.jpg").exists()  # videos get JSON lines only
    # The next run does not take the drawings (inside the walked folder) for inputs.
    server.behaviour.requests.clear()
    Path("results.jsonl").unlink()
    assert predict("data", "--endpoint", "e", "--annotated", "data/drawn", url=server.url) == 0
    assert len(server.requests) == 4


def test_a_folder_that_cannot_be_listed_is_a_failure(
    server: FakeServer, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scandir = os.scandir

    def scandir(path):
        if os.path.normpath(path) == os.path.join("data", "c"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(batch_inputs.os, "scandir", scandir)
    assert predict("data", "--model", "m", url=server.url) == 1
    out = lines()
    failure = {"path": "data/c", "error": "cannot list folder: Permission denied", "status": None}
    assert failure in out
    assert sorted(line["path"] for line in out if "image" in line) == EXPECTED[:2]


def test_find_inputs_skips_an_excluded_folder(images: Path) -> None:
    (images / "c" / "drawn").mkdir()
    shutil.copy(example_image("bus.jpg"), images / "c" / "drawn" / "x.jpg")
    found = [i.path for i in find_inputs(["data"], exclude=["data/c/drawn"])]
    assert found == EXPECTED
    assert [str(i.relative) for i in find_inputs(["data"])][-1] == "c/small.png"


def test_throttle_holds_every_waiter_until_the_deferred_time() -> None:
    throttle, stop = Throttle(), threading.Event()
    deferred = time.monotonic()
    throttle.defer(0.3)
    released: list[float] = []

    def waiter() -> None:
        throttle.wait(stop)
        released.append(time.monotonic())

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(released) == 3 and min(released) - deferred >= 0.3


def test_retry_after_parsing() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(" 0 ") == 0.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    assert retry_after_s("-1") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_s(later) <= 30
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_s(earlier) == 0.0


def test_task_comes_from_metadata_else_from_the_results() -> None:
    box = {"box": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}}
    assert task_of({"task": "segment"}, []) == "segment"
    assert task_of({}, [{**box, "segments": []}]) == "segment"
    assert task_of(None, [{**box, "keypoints": []}]) == "pose"
    assert task_of({}, [{**box, "obb": {}}]) == "obb"
    assert task_of({}, [{"class": 0, "name": "cat", "confidence": 0.9}]) == "classify"
    assert task_of({}, [box]) == "detect"
    assert task_of({}, []) == "detect"
