"""Decoding under a memory budget, against a real dedicated endpoint.

Twenty 8000x8000 16-bit PNGs (and twenty 7000x7000 float32 TIFFs) arrive at once. Each is a
small upload that decodes to hundreds of MB at its source depth. Every answer is a 200, a clear
4xx or a JSON 503 with Retry-After, the Serve processes' summed RSS grows by less than 1.5 GB
(sampled throughout), and a normal request right after succeeds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.processes import RssSampler, actor_pids
from tests.samples import big_float_tiff, big_sixteen_bit_png, bus_jpeg
from tests.traffic import is_json_error

GB = 1024**3
PARALLEL = 20
ENDPOINT = "/endpoints/yolo26n"
FILES = {"png-16bit-8000": big_sixteen_bit_png, "tiff-float-7000": big_float_tiff}


@pytest.mark.parametrize("name", FILES)
def test_parallel_huge_decodes_stay_within_the_budget(server, name: str) -> None:
    data = FILES[name]()
    assert len(data) < 10 * 1024 * 1024  # under the upload limit: the decode is what costs

    def post(_: int) -> requests.Response:
        return requests.post(
            server.url(f"{ENDPOINT}/predict"),
            headers=server.headers(),
            files={"file": (f"{name}.img", data)},
            timeout=120,
        )

    pids = list(actor_pids(server))
    with RssSampler(pids) as memory, ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        answers = list(pool.map(post, range(PARALLEL)))
    statuses = sorted(r.status_code for r in answers)
    print(f"{name}: statuses {statuses}, RSS growth {memory.growth / 2**20:.0f} MB")
    for r in answers:
        assert (
            r.status_code == 200
            or (400 <= r.status_code < 500 and is_json_error(r))
            or (r.status_code == 503 and is_json_error(r) and r.headers.get("Retry-After"))
        ), (r.status_code, r.text[:200])
    assert 200 in statuses, "the budget admitted none of them"
    assert memory.growth < 1.5 * GB, f"{memory.growth / 2**20:.0f} MB"
    normal = server.predict("", bus_jpeg(), prefix=ENDPOINT)
    assert normal.status_code == 200, normal.text
