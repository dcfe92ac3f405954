"""Key loading and checking of serving/auth.py, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.serving.auth import ApiKeys, KeyConfigError, load_keys, presented_key, scope_of

KEY = "k" * 20


def test_no_variable_leaves_every_route_open() -> None:
    keys = load_keys({})
    assert not keys.enabled and keys.check("predict", None) == 200


def test_inline_and_file_keys_and_their_errors(tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text(f"# comment\n{KEY}\n\n{'m' * 20}\n")
    keys = load_keys(
        {"MLOPS_SERVING_PREDICT_KEYS": f"{KEY}, {'z' * 20}", "MLOPS_SERVING_LABELS_KEYS_FILE": str(secret)}
    )
    assert keys.check("predict", b"z" * 20) == 200 and keys.check("labels", b"m" * 20) == 200
    assert keys.check("predict", None) == 401 and keys.check("labels", b"z" * 20) == 403
    assert keys.check("metrics", None) == 200
    with pytest.raises(KeyConfigError, match="not both"):
        load_keys({"MLOPS_SERVING_PREDICT_KEYS": KEY, "MLOPS_SERVING_PREDICT_KEYS_FILE": str(secret)})
    with pytest.raises(KeyConfigError, match="cannot be read"):
        load_keys({"MLOPS_SERVING_LABELS_KEYS_FILE": str(tmp_path / "absent")})
    with pytest.raises(KeyConfigError, match="shorter than 16"):
        load_keys({"MLOPS_SERVING_PREDICT_KEYS": "short"})
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(KeyConfigError, match="holds no key"):
        load_keys({"MLOPS_SERVING_METRICS_KEYS_FILE": str(tmp_path / "empty")})


def test_routes_map_to_their_key_set_and_headers_are_read() -> None:
    assert scope_of("/predict") == scope_of("/predict/a") == scope_of("/invocations/a") == "predict"
    assert scope_of("/labels/a") == "labels" and scope_of("/metrics") == "metrics"
    assert scope_of("/predictions") is None and scope_of("/health") is None
    assert presented_key([(b"authorization", b"Bearer abc")]) == b"abc"
    assert presented_key([(b"authorization", b"Basic abc")]) is None
    assert presented_key([(b"x-api-key", b"abc")]) == b"abc"
    assert ApiKeys({"predict": (b"abc",)}).check("predict", b"abd") == 403
