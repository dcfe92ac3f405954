"""API keys on a real prediction service (a subprocess, real HTTP, real MLflow registry).

Scoring keys and label keys are separate sets (one from the environment, one from a
Docker-secret style file); a missing key is a 401 with WWW-Authenticate, a wrong or the
other set's key a 403, both in the route's own error shape; probes stay open.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serving import bike_record, register, regressor, start_service, write_configs

pytestmark = pytest.mark.integration

PREDICT_KEY = secrets.token_urlsafe(24)
OTHER_PREDICT_KEY = secrets.token_urlsafe(24)
LABELS_KEY = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def service(mlflow_server: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("serving-auth")
    names = write_configs(root / "configs", uuid.uuid4().hex[:8])
    pipeline, features = regressor(root / "configs" / "bike_sharing.yaml")
    register(names["bike_sharing"], pipeline, features)
    labels_file = root / "labels-keys"
    labels_file.write_text(f"# the labeller\n{LABELS_KEY}\n")
    env = {
        "MLOPS_SERVING_PREDICT_KEYS": f"{PREDICT_KEY},{OTHER_PREDICT_KEY}",
        "MLOPS_SERVING_LABELS_KEYS_FILE": str(labels_file),
    }
    running = start_service(root, root / "configs", root / "log", "--use-case", "bike_sharing", env=env)
    try:
        yield running, features
    finally:
        running.stop()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_predict_refuses_a_missing_key_401_and_a_wrong_one_403(service: Any) -> None:
    running, features = service
    url = f"{running.url}/predict/bike_sharing"
    body = {"records": [bike_record(features)]}

    missing = httpx.post(url, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "MLOPS_SERVING_PREDICT_KEYS" in missing.json()["detail"]

    for wrong in ("x" * 32, LABELS_KEY, PREDICT_KEY[:-1]):
        refused = httpx.post(url, json=body, headers=_bearer(wrong))
        assert refused.status_code == 403, refused.text
        assert "may not be used for scoring" in refused.json()["detail"]

    for headers in (_bearer(PREDICT_KEY), _bearer(OTHER_PREDICT_KEY), {"X-API-Key": PREDICT_KEY}):
        answered = httpx.post(url, json=body, headers=headers)
        assert answered.status_code == 200, answered.text


def test_invocations_refusals_keep_mlflows_error_shape(service: Any) -> None:
    running, features = service
    record = bike_record(features)
    body = {"dataframe_records": [record]}
    missing = httpx.post(f"{running.url}/invocations", json=body)
    assert missing.status_code == 401 and missing.json()["error_code"] == "UNAUTHENTICATED"
    wrong = httpx.post(f"{running.url}/invocations/bike_sharing", json=body, headers={"X-API-Key": LABELS_KEY})
    assert wrong.status_code == 403 and wrong.json()["error_code"] == "PERMISSION_DENIED"
    assert httpx.post(f"{running.url}/invocations", json=body, headers=_bearer(PREDICT_KEY)).status_code == 200


def test_labels_take_only_the_labels_keys(service: Any) -> None:
    running, _ = service
    body = {"labels": [{"id": f"auth-{uuid.uuid4().hex[:6]}", "label": 3}]}
    for path in ("/labels", "/labels/bike_sharing"):
        assert httpx.post(f"{running.url}{path}", json=body).status_code == 401
        scoring_key = httpx.post(f"{running.url}{path}", json=body, headers=_bearer(PREDICT_KEY))
        assert scoring_key.status_code == 403, scoring_key.text
        assert "MLOPS_SERVING_LABELS_KEYS" in scoring_key.json()["detail"]
        assert httpx.post(f"{running.url}{path}", json=body, headers=_bearer(LABELS_KEY)).status_code == 200


def test_probes_and_metrics_stay_open_and_openapi_documents_the_keys(service: Any) -> None:
    running, _ = service
    for path in ("/health", "/ready", "/ping", "/models", "/metrics"):
        assert httpx.get(f"{running.url}{path}").status_code == 200, path
    document = httpx.get(f"{running.url}/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"bearerKey", "apiKey"}
    for path in ("/predict/bike_sharing", "/predict", "/invocations", "/labels", "/labels/{use_case}"):
        operation = document["paths"][path]["post"]
        assert {"401", "403"} <= set(operation["responses"]), path
        assert operation["security"] == [{"bearerKey": []}, {"apiKey": []}]
    assert "security" not in document["paths"]["/health"]["get"]
