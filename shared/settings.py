"""Every environment variable the project reads or sets, in one place, each default once.

Configuration proper lives in serve_config.yaml (deployments/config.py validates it); the
environment carries only what must reach a process before any config does: where the key
store, the registry and the weights are for the CLI, the proxy's upload limit (read when each
proxy starts), and Ultralytics' offline switches (read when it is imported).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Ultralytics reads these at import: never the network, never ~/.config. Set for every Ray
# process by shared/cluster.py and in-process by deployments/yolo.py.
ULTRALYTICS_ENV = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
    "YOLO_CONFIG_DIR": "/tmp/yolo-endpoints/ultralytics",
}


DEFAULT_MAX_UPLOAD_MB = 10  # serve_config.yaml's max_upload_mb, and the proxy's default
DEFAULT_MAX_VIDEO_MB = 100  # max_video_mb: dedicated endpoints' video uploads
# Rejections each proxy repeats from holds, at most this many a second (shared/pace.py): above
# the 1000 a second the service is built to answer and, at the 0.17-0.23 ms of the proxy's CPU a
# paced answer cost in bench.rejections, about a quarter to a third of a core however hard the
# flood. 0 turns the pace off.
DEFAULT_HELD_ANSWERS_PER_S = 1500


@dataclass(frozen=True)
class Settings:
    keys_file: Path  # YOLO_ENDPOINTS_KEYS: the CLI's key store
    registry: Path  # YOLO_ENDPOINTS_REGISTRY: models.yaml
    weights_dir: Path  # YOLO_ENDPOINTS_WEIGHTS: where fetched weights are cached
    max_upload_mb: float  # YOLO_MAX_UPLOAD_MB: the proxy edge guard's limit
    max_video_mb: float  # YOLO_MAX_VIDEO_MB: its limit on the routes that take video
    held_answers_per_s: float  # YOLO_HELD_ANSWERS_PER_S: the edge's pace of held rejections
    # YOLO_VALIDATE_RESPONSES=1: every JSON response is checked against its route's declared
    # model (deployments/response_check.py); the test cluster turns it on.
    validate_responses: bool


def settings(env: Mapping[str, str] = os.environ) -> Settings:
    """Read now (not at import), so a test or a subprocess sees its own environment."""
    return Settings(
        keys_file=Path(env.get("YOLO_ENDPOINTS_KEYS", PROJECT_ROOT / ".keys" / "keys.json")),
        registry=Path(env.get("YOLO_ENDPOINTS_REGISTRY", PROJECT_ROOT / "models.yaml")),
        weights_dir=Path(env.get("YOLO_ENDPOINTS_WEIGHTS", PROJECT_ROOT / ".weights")).resolve(),
        max_upload_mb=float(env.get("YOLO_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB)),
        max_video_mb=float(env.get("YOLO_MAX_VIDEO_MB", DEFAULT_MAX_VIDEO_MB)),
        held_answers_per_s=float(env.get("YOLO_HELD_ANSWERS_PER_S", DEFAULT_HELD_ANSWERS_PER_S)),
        validate_responses=env.get("YOLO_VALIDATE_RESPONSES", "") == "1",
    )


def apply_ultralytics_env(env: dict[str, str] | os._Environ = os.environ) -> None:
    for name, value in ULTRALYTICS_ENV.items():
        env.setdefault(name, value)
