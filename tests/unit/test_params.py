"""Parameter parsing: defaults, ranges, and 400s that name the field and what it accepts."""

from __future__ import annotations

import pytest

from shared.errors import ApiError
from shared.params import PredictParams, parse_params


def parse(**fields: str | list[str]) -> PredictParams:
    return parse_params({k: v if isinstance(v, list) else [v] for k, v in fields.items()})


def rejection(**fields: str | list[str]) -> str:
    with pytest.raises(ApiError) as caught:
        parse(**fields)
    assert caught.value.status == 400
    return caught.value.message


def test_defaults_are_the_spec_s() -> None:
    assert parse() == PredictParams(conf=0.25, iou=0.70, imgsz=640, normalize=False, decimals=5)


def test_a_model_s_own_default_imgsz() -> None:
    assert parse_params({}, default_imgsz=96).imgsz == 96
    assert parse_params({"imgsz": ["320"]}, default_imgsz=96).imgsz == 320


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"conf": "0.01"}, {"conf": 0.01}),
        ({"conf": "1"}, {"conf": 1.0}),
        ({"conf": " 0.5 "}, {"conf": 0.5}),
        ({"iou": "0"}, {"iou": 0.0}),
        ({"iou": "0.95"}, {"iou": 0.95}),
        ({"imgsz": "32"}, {"imgsz": 32}),
        ({"imgsz": "1280"}, {"imgsz": 1280}),
        ({"imgsz": "320.0"}, {"imgsz": 320}),
        ({"normalize": "true"}, {"normalize": True}),
        ({"normalize": "False"}, {"normalize": False}),
        ({"normalize": "1"}, {"normalize": True}),
        ({"decimals": "0"}, {"decimals": 0}),
        ({"decimals": "10"}, {"decimals": 10}),
    ],
)
def test_values_at_and_inside_the_bounds(fields: dict, expected: dict) -> None:
    params = parse(**fields)
    for name, value in expected.items():
        assert getattr(params, name) == value


@pytest.mark.parametrize(
    ("fields", "field", "accepts"),
    [
        ({"conf": "0"}, "conf", "from 0.01 to 1.0"),
        ({"conf": "0.009"}, "conf", "from 0.01 to 1.0"),
        ({"conf": "1.01"}, "conf", "from 0.01 to 1.0"),
        ({"conf": "abc"}, "conf", "from 0.01 to 1.0"),
        ({"conf": "nan"}, "conf", "from 0.01 to 1.0"),
        ({"conf": "inf"}, "conf", "from 0.01 to 1.0"),
        ({"conf": ""}, "conf", "from 0.01 to 1.0"),
        ({"iou": "-0.1"}, "iou", "from 0.0 to 0.95"),
        ({"iou": "0.96"}, "iou", "from 0.0 to 0.95"),
        ({"imgsz": "31"}, "imgsz", "integer from 32 to 1280"),
        ({"imgsz": "1281"}, "imgsz", "integer from 32 to 1280"),
        ({"imgsz": "640.5"}, "imgsz", "integer from 32 to 1280"),
        ({"imgsz": "big"}, "imgsz", "integer from 32 to 1280"),
        ({"imgsz": "1e400"}, "imgsz", "integer from 32 to 1280"),
        ({"decimals": "11"}, "decimals", "integer from 0 to 10"),
        ({"decimals": "-1"}, "decimals", "integer from 0 to 10"),
        ({"normalize": "maybe"}, "normalize", "true or false"),
    ],
)
def test_bad_values_name_the_field_and_the_range(fields: dict, field: str, accepts: str) -> None:
    message = rejection(**fields)
    assert f"'{field}'" in message
    assert accepts in message
    assert repr(fields[field]) in message  # what was sent, so the client sees its mistake


@pytest.mark.parametrize("field", ["conf", "iou", "imgsz", "normalize", "decimals"])
def test_a_repeated_parameter_is_rejected(field: str) -> None:
    message = rejection(**{field: ["1", "1"]})
    assert f"'{field}'" in message
    assert "2 times" in message


def test_an_unknown_parameter_is_rejected_by_name() -> None:
    message = rejection(confidence="0.5")
    assert "'confidence'" in message
    assert "conf, iou, imgsz" in message


def test_a_long_bad_value_is_echoed_shortened() -> None:
    message = rejection(conf="9" * 200)
    assert len(message) < 120


def test_platform_only_fields_are_accepted_and_ignored() -> None:
    # The official SDK's predict body may carry these; they do not apply to one still image.
    assert parse_params({"vid_stride": ["1"], "bits": ["8"]}) == parse_params({})
