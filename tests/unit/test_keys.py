"""The key store and the KeyRing: format, hashing, parsing, reloads, no secrets at rest."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from shared import keys
from shared.errors import ApiError


def replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_generated_keys_look_like_the_platforms() -> None:
    generated = {keys.generate_key() for _ in range(50)}
    assert len(generated) == 50
    assert all(re.fullmatch(r"ul_[0-9a-f]{40}", k) for k in generated)


def test_store_keeps_hashes_never_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = keys.create_key(path, "app", models=["yolo26n"], rate_limit=100)
    text = path.read_text()
    assert key not in text and key[len("ul_") :] not in text
    (record,) = json.loads(text)["keys"]
    assert record["hash"] == keys.hash_key(key)
    assert record["prefix"] == key[: keys.PREFIX_LEN]
    assert record["models"] == ["yolo26n"]
    assert record["rate_limit"] == 100
    assert record["created"].endswith("+00:00")
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_create_rejects_duplicates_bad_names_and_bad_limits(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys.create_key(path, "app")
    with pytest.raises(ValueError, match="already exists"):
        keys.create_key(path, "app")
    for name in ["", "has space", "tab\there", "-leading", "x" * 65]:
        with pytest.raises(ValueError, match="key name"):
            keys.create_key(path, name)
    for limit in [0, -3]:
        with pytest.raises(ValueError, match="rate_limit"):
            keys.create_key(path, "other", rate_limit=limit)
    assert [r.name for r in keys.read_store(path)] == ["app"]


def test_owner_and_scope_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ops = keys.create_key(path, "ops", owner="acme-1", scope="deploy")
    keys.create_key(path, "plain")
    stored = [(r["owner"], r["scope"]) for r in json.loads(path.read_text())["keys"]]
    assert stored == [("acme-1", "deploy"), ("default", "predict")]
    assert [(r.owner, r.scope) for r in keys.read_store(path)] == stored
    record = keys.KeyRing(path, refresh_s=0).authenticate(f"Bearer {ops}")
    assert (record.owner, record.scope) == ("acme-1", "deploy")


def test_a_record_written_before_owners_and_scopes_reads_with_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = keys.generate_key()
    old = {
        "name": "old",
        "hash": keys.hash_key(key),
        "prefix": key[: keys.PREFIX_LEN],
        "created": "2025-01-01T00:00:00+00:00",
        "models": None,
        "rate_limit": None,
    }
    path.write_text(json.dumps({"keys": [old]}))
    record = keys.KeyRing(path, refresh_s=0).authenticate(f"Bearer {key}")
    assert (record.name, record.owner, record.scope) == ("old", "default", "predict")
    # The next write keeps it, now with both spelled out.
    keys.create_key(path, "new")
    assert json.loads(path.read_text())["keys"][0] == {
        **old,
        "owner": "default",
        "scope": "predict",
    }


@pytest.mark.parametrize(
    "owner", ["", "Acme", "-acme", "a" * 40, "has space", "a_b", "a.b", "a/b", "acme\n", "ä"]
)
def test_create_rejects_bad_owners(tmp_path: Path, owner: str) -> None:
    path = tmp_path / "keys.json"
    with pytest.raises(ValueError, match="owner"):
        keys.create_key(path, "app", owner=owner)
    assert keys.read_store(path) == []
    assert keys.create_key(path, "app", owner="a" * 39)  # the longest


@pytest.mark.parametrize("scope", ["", "admin", "Deploy", "predict,deploy"])
def test_create_rejects_bad_scopes(tmp_path: Path, scope: str) -> None:
    path = tmp_path / "keys.json"
    with pytest.raises(ValueError, match="scope"):
        keys.create_key(path, "app", scope=scope)  # type: ignore[arg-type]
    assert keys.read_store(path) == []


def test_revoke(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys.create_key(path, "a")
    keys.create_key(path, "b")
    assert keys.revoke_key(path, "a")
    assert not keys.revoke_key(path, "a")
    assert [r.name for r in keys.read_store(path)] == ["b"]


def test_concurrent_creates_all_land(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    threads = [threading.Thread(target=keys.create_key, args=(path, f"k{i}")) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.name for r in keys.read_store(path)) == sorted(f"k{i}" for i in range(16))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "ul_" + "a" * 40,  # no scheme
        "Basic " + "ul_" + "a" * 40,
        "Bearer",
        "Bearer ul_" + "a" * 39,
        "Bearer ul_" + "A" * 40,
        "Bearer sk_" + "a" * 40,
        "Bearer ul_" + "a" * 40 + " extra",
    ],
)
def test_malformed_headers_are_401_with_a_challenge(header: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        keys.bearer_token(header)
    assert caught.value.status == 401
    assert caught.value.message.startswith("Unauthorized")
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("form", ["Bearer {}", "bearer {}", "BEARER  {} ", " Bearer {}"])
def test_bearer_scheme_is_case_insensitive(form: str) -> None:
    key = "ul_" + "0123456789" * 4
    assert keys.bearer_token(form.format(key)) == key


def test_keyring_sees_created_and_revoked_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = keys.KeyRing(path, refresh_s=0)
    first = keys.create_key(path, "first")
    assert ring.authenticate(f"Bearer {first}").name == "first"
    second = keys.create_key(path, "second", models=["yolo26n"], rate_limit=7)
    record = ring.authenticate(f"Bearer {second}")
    assert record.name == "second"
    assert record.rate_limit == 7
    assert record.allows("yolo26n") and not record.allows("yolo11n")
    keys.revoke_key(path, "first")
    with pytest.raises(ApiError) as caught:
        ring.authenticate(f"Bearer {first}")
    assert caught.value.status == 401
    assert "revoked" in caught.value.message
    assert first not in caught.value.message


def test_unknown_key_and_missing_store_are_401(tmp_path: Path) -> None:
    ring = keys.KeyRing(tmp_path / "absent.json", refresh_s=0)
    with pytest.raises(ApiError) as caught:
        ring.authenticate(f"Bearer {keys.generate_key()}")
    assert caught.value.status == 401


def test_keyring_keeps_last_good_keys_when_the_store_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = keys.create_key(path, "app")
    ring = keys.KeyRing(path, refresh_s=0)
    assert ring.authenticate(f"Bearer {key}").name == "app"
    replace(path, '{"keys": [')  # a half-edited file
    assert ring.authenticate(f"Bearer {key}").name == "app"
    replace(path, json.dumps({"keys": []}))
    with pytest.raises(ApiError):
        ring.authenticate(f"Bearer {key}")


_GOOD_RECORD = {"name": "a", "hash": "0" * 64, "prefix": "p", "created": "x"}
WRONG_SHAPES = [
    "[]",
    '"keys"',
    "null",
    '{"keys": {}}',
    '{"keys": ["ul_abc"]}',
    '{"keys": [{"name": "a", "hash": 1, "prefix": "ul_", "created": "x"}]}',
    '{"keys": [{"name": "a", "hash": null, "prefix": "ul_", "created": "x"}]}',
    '{"keys": [{"name": "a", "hash": "zz", "prefix": "ul_", "created": "x"}]}',
    '{"keys": [{"name": "a", "prefix": "ul_", "created": "x"}]}',
    '{"keys": [{"name": ["a"], "hash": "%s", "prefix": "ul_", "created": "x"}]}' % ("0" * 64),
    '{"keys": [{"name": "a", "hash": "%s", "prefix": "p", "created": "x", "models": "m"}]}'
    % ("0" * 64),
    '{"keys": [{"name": "a", "hash": "%s", "prefix": "p", "created": "x", "rate_limit": "5"}]}'
    % ("0" * 64),
    # Owner and scope may be absent (an older record), never wrong.
    *(
        json.dumps({"keys": [{**_GOOD_RECORD, field: value}]})
        for field, value in [
            ("owner", None),
            ("owner", 7),
            ("owner", ""),
            ("owner", "Acme"),
            ("owner", "a/b"),
            ("scope", None),
            ("scope", "admin"),
            ("scope", ["deploy"]),
        ]
    ),
]


@pytest.mark.parametrize("text", WRONG_SHAPES)
def test_valid_json_of_the_wrong_shape_keeps_the_last_good_keys_and_logs_an_error(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    key = keys.create_key(path, "app")
    ring = keys.KeyRing(path, refresh_s=0)
    assert ring.authenticate(f"Bearer {key}").name == "app"
    replace(path, text)
    with pytest.raises(ValueError):
        keys.read_store(path)
    with caplog.at_level("ERROR", logger="shared.keys"):
        assert ring.authenticate(f"Bearer {key}").name == "app"
    assert any(r.levelname == "ERROR" and "unreadable" in r.message for r in caplog.records)
    # Another key still gets a 401, not a 500.
    with pytest.raises(ApiError) as caught:
        ring.authenticate(f"Bearer {keys.generate_key()}")
    assert caught.value.status == 401


def test_writes_fsync_the_file_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1]
    )
    keys.create_key(tmp_path / "keys.json", "app")
    # The file's data before the rename, the folder's entry after it.
    assert events == ["fsync", "replace", "fsync"], events


def test_keyring_rereads_at_most_once_per_refresh_interval(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = keys.KeyRing(path, refresh_s=3600)
    with pytest.raises(ApiError):
        ring.authenticate(f"Bearer {keys.generate_key()}")  # loads the (empty) store now
    late = keys.create_key(path, "late")
    with pytest.raises(ApiError):
        ring.authenticate(f"Bearer {late}")


def test_a_key_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    # `$` matches before a final newline; one would split `keys list`'s TSV row.
    with pytest.raises(ValueError):
        keys.create_key(tmp_path / "keys.json", "app\n")
