"""`yolo-endpoints predict` against the real server: files, a folder and a video in, one JSON
line per image (or processed frame) out, each equal to what the API answers for it; a second
run resumes; the shared route's limit is waited out, not failed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.live_deployments import new_key
from tests.videos import bus_video

BOX_TOL_PX = 1.0


def run_client(server, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "YOLO_ENDPOINTS_KEY": key or server.key}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "predict", *args, "--url", server.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_files_a_folder_and_a_video_to_a_dedicated_endpoint(
    server, bus: Path, zidane: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    (inputs / "nested").mkdir(parents=True)
    shutil.copy(bus, inputs / "bus.jpg")
    shutil.copy(zidane, inputs / "nested" / "zidane.jpg")
    (inputs / "clip.mp4").write_bytes(bus_video("mp4", frames=6, fps=10, size=(320, 240)))
    out = tmp_path / "results.jsonl"
    drawn = tmp_path / "drawn"
    done = run_client(
        server,
        str(inputs),
        "--endpoint",
        "yolo26n",
        "--vid-stride",
        "2",
        "--out",
        str(out),
        "--annotated",
        str(drawn),
        "--concurrency",
        "3",
    )
    assert done.returncode == 0, done.stderr
    assert server.key not in done.stdout + done.stderr
    got = lines(out)
    by_path: dict[str, list[dict]] = {}
    for line in got:
        by_path.setdefault(Path(line["path"]).name, []).append(line)
    assert sorted(by_path) == ["bus.jpg", "clip.mp4", "zidane.jpg"]
    assert sorted(line["frame"] for line in by_path["clip.mp4"]) == [0, 2, 4]
    for name, path in (("bus.jpg", bus), ("zidane.jpg", zidane)):
        (line,) = by_path[name]
        single = server.predict("", path, prefix="/endpoints/yolo26n").json()["images"][0]
        assert line["image"]["shape"] == single["shape"]
        classes = [r["class"] for r in line["image"]["results"]]
        assert classes == [r["class"] for r in single["results"]]
        for a, b in zip(line["image"]["results"], single["results"], strict=True):
            assert max(abs(a["box"][k] - b["box"][k]) for k in a["box"]) <= BOX_TOL_PX
    # The annotated copy of each image: its size, and not the input.
    with Image.open(drawn / "bus.jpg.jpg") as image:
        assert image.size == (810, 1080)
        assert not np.array_equal(np.asarray(image), np.asarray(Image.open(bus)))
    # A second run finds everything done and sends nothing.
    again = run_client(server, str(inputs), "--endpoint", "yolo26n", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert len(lines(out)) == len(got)
    assert "skipped" in again.stderr


def test_the_shared_route_waits_out_the_limit_and_refuses_video(
    server, tiny_png: bytes, tmp_path: Path
) -> None:
    key = new_key(server, "batch")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(24):  # more than the 20 a window allows: some wait for the window to roll
        (inputs / f"{i:02}.png").write_bytes(tiny_png)
    out = tmp_path / "results.jsonl"
    done = run_client(
        server, str(inputs), "--model", "yolo26n", "--imgsz", "32", "--out", str(out), key=key
    )
    assert done.returncode == 0, done.stderr
    got = lines(out)
    assert len(got) == 24 and all("image" in line for line in got)
    video = tmp_path / "clip.mp4"
    video.write_bytes(bus_video("mp4", frames=2, size=(160, 120)))
    refused = run_client(server, str(video), "--model", "yolo26n", "--out", str(out), key=key)
    assert refused.returncode == 1
    assert "clip.mp4" in refused.stderr
