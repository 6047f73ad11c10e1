"""Corrupt files of every accepted format, over real HTTP: a 200 or a JSON 400, never a 5xx.

For each format, 30 corruptions of one valid file (truncations at several offsets, bit flips
after the header, a valid header followed by random bytes; tests/samples.py) go to a dedicated
endpoint, which has no rate limit. The exceptions they raise inside the libraries are caught at
the decode boundary (shared/images.py names them).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.samples import corruptions, valid_samples

ENDPOINT = "/endpoints/yolo26n/predict"
PER_FORMAT = 30
SAMPLES = valid_samples()


def test_every_accepted_format_has_a_sample() -> None:
    assert set(SAMPLES) >= {
        "jpeg", "png", "webp", "avif", "heic", "jpeg2000", "tiff", "bmp", "dng", "mpo",
    }  # fmt: skip


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_corruptions_answer_200_or_a_json_400(server, fmt: str) -> None:
    cases = corruptions(SAMPLES[fmt], count=PER_FORMAT, seed=7)
    assert len(cases) >= PER_FORMAT

    def post(case: tuple[str, bytes]) -> tuple[str, int, str]:
        name, data = case
        r = requests.post(
            server.url(ENDPOINT),
            headers=server.headers(),
            files={"file": (f"corrupt.{fmt}", data)},
            data={"imgsz": "320"},
            timeout=120,
        )
        return name, r.status_code, r.text

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(post, cases))
    bad = [(name, status, text[:200]) for name, status, text in answers if status not in (200, 400)]
    assert not bad, bad
    for name, status, text in answers:
        if status == 400:
            body = json.loads(text)
            assert set(body) == {"error"} and body["error"].startswith("Invalid"), (name, body)
    # The valid file itself is served.
    ok = requests.post(
        server.url(ENDPOINT),
        headers=server.headers(),
        files={"file": (f"valid.{fmt}", SAMPLES[fmt])},
        timeout=120,
    )
    assert ok.status_code == 200, ok.text
