"""`yolo-endpoints keys ...`: in-process for the logic, once through the installed script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared import cli, keys

SCRIPT = Path(sys.executable).parent / "yolo-endpoints"


def run(capsys: pytest.CaptureFixture[str], store: Path, *argv: str) -> tuple[int, str]:
    code = cli.main(["--keys-file", str(store), *argv])
    return code, capsys.readouterr().out


def test_create_prints_the_key_alone_on_the_last_line(capsys, tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    code, out = run(capsys, store, "keys", "create", "my-app")
    assert code == 0
    key = out.splitlines()[-1]
    assert re.fullmatch(r"ul_[0-9a-f]{40}", key)
    assert keys.KeyRing(store).authenticate(f"Bearer {key}").name == "my-app"


def test_create_with_models_and_rate_limit(capsys, tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    run(capsys, store, "keys", "create", "cam", "--models", "yolo26n", "--rate-limit", "100")
    (record,) = keys.read_store(store)
    assert record.models == ("yolo26n",)
    assert record.rate_limit == 100


def test_create_with_owner_and_scope(capsys, tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    run(capsys, store, "keys", "create", "ci", "--owner", "acme", "--scope", "deploy")
    run(capsys, store, "keys", "create", "plain")
    assert [(r.owner, r.scope) for r in keys.read_store(store)] == [
        ("acme", "deploy"),
        ("default", "predict"),
    ]
    _, listing = run(capsys, store, "keys", "list")
    # TSV: name, prefix, created, models, limit, owner, scope.
    rows = [line.split("\t") for line in listing.splitlines()]
    assert [len(row) for row in rows] == [7, 7]
    assert [row[5:] for row in rows] == [["acme", "deploy"], ["default", "predict"]]


def test_list_shows_names_and_prefixes_never_secrets(capsys, tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    _, out = run(capsys, store, "keys", "create", "a")
    key_a = out.splitlines()[-1]
    _, out = run(capsys, store, "keys", "create", "b", "--models", "yolo26n")
    key_b = out.splitlines()[-1]
    code, listing = run(capsys, store, "keys", "list")
    assert code == 0
    lines = listing.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["a", "b"]
    assert key_a[: keys.PREFIX_LEN] in lines[0]
    assert "yolo26n" in lines[1]
    for secret in (key_a, key_b):
        assert secret not in listing
        assert secret[keys.PREFIX_LEN :] not in listing
        assert keys.hash_key(secret) not in listing


def test_revoke(capsys, tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    run(capsys, store, "keys", "create", "gone")
    code, out = run(capsys, store, "keys", "revoke", "gone")
    assert code == 0 and "revoked" in out
    assert keys.read_store(store) == []
    code, out = run(capsys, store, "keys", "revoke", "gone")
    assert code == 1 and "no key named" in out


def test_ensure_creates_only_into_an_empty_store(capsys, tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    code, out = run(capsys, store, "keys", "ensure", "first")
    assert code == 0 and re.fullmatch(r"ul_[0-9a-f]{40}", out.splitlines()[-1])
    code, out = run(capsys, store, "keys", "ensure", "second")
    assert code == 0 and out == ""
    assert [r.name for r in keys.read_store(store)] == ["first"]


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "dup"],  # the second time
        ["keys", "create", "bad name"],
        ["keys", "create", "x", "--rate-limit", "0"],
        ["keys", "create", "x", "--rate-limit", "many"],
        ["keys", "create", "x", "--owner", "Acme"],
        ["keys", "create", "x", "--owner", ""],
        ["keys", "create", "x", "--scope", "admin"],
    ],
)
def test_bad_create_exits_2_and_changes_nothing(capsys, tmp_path: Path, argv) -> None:
    store = tmp_path / "keys.json"
    run(capsys, store, "keys", "create", "dup")
    before = store.read_bytes()
    with pytest.raises(SystemExit) as exited:
        run(capsys, store, *argv)
    assert exited.value.code == 2
    assert store.read_bytes() == before


def test_keys_file_from_environment(capsys, tmp_path: Path, monkeypatch) -> None:
    store = tmp_path / "env-keys.json"
    monkeypatch.setenv("YOLO_ENDPOINTS_KEYS", str(store))
    assert cli.main(["keys", "create", "from-env"]) == 0
    assert [r.name for r in keys.read_store(store)] == ["from-env"]


def test_installed_console_script(tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    done = subprocess.run(
        [str(SCRIPT), "--keys-file", str(store), "keys", "create", "script"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    key = done.stdout.splitlines()[-1]
    assert re.fullmatch(r"ul_[0-9a-f]{40}", key)
    assert keys.KeyRing(store).authenticate(f"Bearer {key}").name == "script"
