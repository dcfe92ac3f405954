"""`mlops lineage`, `mlops reproduce` and model cards on a model the training DAG made, under `dag.test()`.

A real MLflow server, the real DVC cache and remote, the CLI through `mlops.cli.main`.
breast_cancer trains fastest of the bundled use cases (a scikit-learn source, three
candidates); the retraining must give the recorded metrics exactly. A tampered snapshot
copy is found by its hash; a changed lock file is refused, and accepted with
--allow-code-drift, which the result says.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow_xcom import task_xcom

from mlops.config import UseCase, find_use_case, load_all

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALL_USE_CASES = sorted(u.name for u in load_all(PROJECT_ROOT / "configs"))
LOCK_SHA256 = hashlib.sha256((PROJECT_ROOT / "uv.lock").read_bytes()).hexdigest()


def _git(*args: str, cwd: Path = PROJECT_ROOT) -> str | None:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from mlops import cli

    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def cancer(mlflow_server: str, airflow_home: Path, ge_dir: Path) -> UseCase:
    return find_use_case("breast_cancer")


@pytest.fixture(scope="module")
def champion(cancer: UseCase) -> dict[str, Any]:
    """One training DAG run; the champion it promoted, its training run's tags and its DAG run id."""
    from mlflow import MlflowClient

    from mlops.mlflow import registry
    from mlops.orchestration.training import build_training_dag

    dag_run = build_training_dag(cancer).test(run_conf={"reason": "lineage test"})
    assert str(dag_run.state) == "success", {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    info = registry.champion(cancer.model_name)
    assert info is not None and info.run_id is not None
    run = MlflowClient().get_run(info.run_id)
    return {"version": info.version, "run_id": info.run_id, "tags": dict(run.data.tags),
            "metrics": dict(run.data.metrics), "dag_run_id": dag_run.run_id}  # fmt: skip


def test_lineage_prints_the_chain_with_each_value_checked(
    cancer: UseCase, champion: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    tags = champion["tags"]
    snapshot = task_xcom("train_breast_cancer", "ingest_snapshot", champion["dag_run_id"])
    validation = task_xcom("train_breast_cancer", "validate_snapshot", champion["dag_run_id"])
    code, text, _ = _cli(capsys, "lineage", f"{cancer.model_name}@champion")
    assert code == 0
    md5 = snapshot["md5"]
    assert tags["dvc_md5"] == md5 == hashlib.md5(Path(snapshot["path"]).read_bytes()).hexdigest()
    assert f"model {cancer.model_name} v{champion['version']} (@champion)" in text
    assert f"snapshot: DVC md5 {md5}, restorable from the DVC cache" in text
    assert f"git commit {_git('rev-parse', 'HEAD') or 'unknown'}" in text
    assert f"uv.lock sha256 {LOCK_SHA256}" in text
    assert f"airflow: DAG run train_breast_cancer / {champion['dag_run_id']}" in text
    assert "trigger: lineage test" in text and "approval: not required" in text
    assert "gained @champion: promoted by train_breast_cancer/" in text
    assert f"Data Docs: {validation['data_docs_page']}" in text and Path(validation["data_docs_page"]).is_file()

    code, out, _ = _cli(capsys, "lineage", f"{cancer.model_name}/{champion['version']}", "--json")
    chain = json.loads(out)
    assert code == 0 and chain["version"] == champion["version"] and chain["aliases"] == ["champion"]
    assert chain["data"]["restorable"] is True and chain["data"]["rows"] == snapshot["rows"]
    assert chain["code"]["git_dirty"] == tags["git_dirty"] and tags["git_dirty"] in ("true", "false", "unknown")
    assert chain["validation"]["result"] == "passed"
    evaluated = validation["statistics"]["evaluated_expectations"]
    assert chain["validation"]["statistics"] == f"{evaluated:g} of {evaluated:g} expectations met"
    assert (
        chain["training"]["run_id"] == champion["run_id"]
        and chain["training"]["parent_run_id"] == tags["mlflow.parentRunId"]
    )
    assert chain["gate"]["passed"] is True and chain["use_case_origin"].startswith("recorded with run")


def test_lineage_of_a_logged_prediction(
    cancer: UseCase, champion: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from mlops.predictionlog.frames import PredictionBatch
    from mlops.predictionlog.predictions import append_predictions

    features = {name: [0.5] for name in cancer.features.all}
    batch = PredictionBatch(cancer.name, cancer.model_name, champion["version"], "online", ["lineage-req-1"],
                            [datetime(2026, 3, 1, 12)], [1], features)  # fmt: skip
    append_predictions(cancer, [batch])
    code, text, _ = _cli(capsys, "lineage", "lineage-req-1")
    assert code == 0
    lines = text.splitlines()
    # The log keeps the class as the model returned it: an int, not a float (issue 17).
    assert lines[0] == "prediction lineage-req-1 (breast_cancer, online): 1"
    assert lines[2] == "  role: @champion (by the alias history at the time it was logged)"
    assert "mean_radius=0.5" in lines[3]
    assert f"model {cancer.model_name} v{champion['version']}" in text


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["lineage", "no_such_model@champion"], "no registered model 'no_such_model'"),
        (["lineage", "breast_cancer_classifier@nosuch"], "has no @nosuch; its aliases: @champion"),
        (["lineage", "breast_cancer_classifier/999"], "has no version 999; registered versions: "),
        # Every use case in configs/ is searched, in name order: a new config changes the list, not the test.
        (["lineage", "no-such-request"], "nor a request id in the prediction log of " + ", ".join(ALL_USE_CASES)),
        (["lineage", "breast_cancer_classifier/1", "--use-case", "bike_sharing"], "registers 'bike_sharing_cnt'"),
        (["reproduce", "no-such-request"], "name a model version as model@alias or model/version"),
        (["reproduce", "breast_cancer_classifier@champion", "--tolerance", "-1"], "--tolerance must be 0"),
    ],
)
def test_bad_targets_say_what_exists(
    champion: dict[str, Any], capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    code, out, err = _cli(capsys, *argv)
    assert code == 1 and out == "" and says in err, err


def test_a_model_card_is_logged_with_the_version(cancer: UseCase, champion: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    from mlops.mlflow.lineage import artifact_text

    client = MlflowClient()
    path = client.get_model_version(cancer.model_name, champion["version"]).tags["mlops.model_card"]
    assert path == f"model_card/v{champion['version']}.md"
    card = artifact_text(client, champion["run_id"], path)
    assert card is not None and card.startswith(f"# Model card: {cancer.model_name} v{champion['version']}")
    for section in ("Intended use", "Training data", "Features and target", "Holdout metrics", "Metrics per slice",
                    "Gate", "Approval", "Lineage", "Known limitations"):  # fmt: skip
        assert f"\n## {section}\n" in card
    assert cancer.description in card and cancer.model_card.limitations in card
    assert f"DVC md5 `{champion['tags']['dvc_md5']}`" in card and "No slices configured" in card
    assert f"| f1 | {champion['metrics']['f1']:.4g} |" in card


def test_reproduce_gives_the_recorded_metrics_exactly(
    cancer: UseCase, champion: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    code, out, err = _cli(capsys, "reproduce", f"{cancer.model_name}@champion")
    assert code == 0, err
    assert out.splitlines()[-1] == "reproduced: every recorded metric agrees exactly"
    recorded = {k: v for k, v in champion["metrics"].items() if k in ("accuracy", "f1", "precision", "recall",
                                                                         "roc_auc", "log_loss")}  # fmt: skip
    for metric, value in recorded.items():
        assert f"{metric} " in out and repr(value) in out
    run_id = out.splitlines()[-2].removeprefix("logged as run ")
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["mlops.reproduces"] == f"{cancer.model_name}/{champion['version']}"
    assert run.data.tags["mlops.reproduced"] == "true" and run.data.tags["mlops.code_drift"] == "false"
    assert {k: run.data.metrics[k] for k in recorded} == recorded
    assert MlflowClient().get_experiment(run.info.experiment_id).name == "breast_cancer-reproduce"


@pytest.fixture
def snapshot_objects(champion: dict[str, Any]) -> Iterator[tuple[Path, Path]]:
    """The champion's snapshot in the DVC cache and remote; put back as they were after the test."""
    from mlops.settings import get_settings

    md5 = champion["tags"]["dvc_md5"]
    settings = get_settings()
    cache = settings.data_dir / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    remote = settings.dvc_remote_dir / "files" / "md5" / md5[:2] / md5[2:]
    saved = {path: path.read_bytes() for path in (cache, remote)}
    yield cache, remote
    for path, data in saved.items():
        path.chmod(0o644)
        path.write_bytes(data)
        path.chmod(0o444)


def _tamper(path: Path) -> None:
    path.chmod(0o644)  # DVC keeps its objects read-only
    path.write_bytes(path.read_bytes()[:-1] + b"\0")


def test_a_tampered_snapshot_is_found_by_its_hash(
    cancer: UseCase,
    champion: dict[str, Any],
    snapshot_objects: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache, remote = snapshot_objects
    md5 = champion["tags"]["dvc_md5"]
    target = f"{cancer.model_name}@champion"
    _tamper(cache)
    _, out, _ = _cli(capsys, "lineage", target, "--json")
    data = json.loads(out)["data"]
    assert data["restorable"] is True and data["availability"].startswith("restorable from DVC remote local")
    assert f"the copy of {md5} in the DVC cache" in data["availability"] and "is corrupt" in data["availability"]
    # The good copy in the remote is what the retraining gets.
    assert _cli(capsys, "reproduce", target)[0] == 0

    _tamper(remote)
    _, out, _ = _cli(capsys, "lineage", target, "--json")
    data = json.loads(out)["data"]
    assert data["restorable"] is False and data["availability"].startswith("not restorable")
    code, out, err = _cli(capsys, "reproduce", target)
    assert code == 1 and out == ""
    assert f"cannot restore the training snapshot (DVC md5 {md5})" in err and err.count("is corrupt") == 2


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Another checkout of the commit the champion was trained from, as the project root."""
    clone = tmp_path / "checkout"
    if _git("rev-parse", "HEAD") is not None:
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(PROJECT_ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "--quiet", _git("rev-parse", "HEAD") or "", "--", "uv.lock"],
                       cwd=clone, check=True)  # fmt: skip
    else:  # no git (a source tarball): the commit reads "unknown" in both places
        clone.mkdir()
        shutil.copy(PROJECT_ROOT / "uv.lock", clone / "uv.lock")
    monkeypatch.setenv("MLOPS_PROJECT_ROOT", str(clone))
    monkeypatch.setenv("MLOPS_CONFIGS_DIR", str(PROJECT_ROOT / "configs"))
    return clone


def test_a_changed_lock_file_is_refused_unless_code_drift_is_allowed(
    cancer: UseCase, champion: dict[str, Any], checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    target = f"{cancer.model_name}@champion"
    assert (checkout / "uv.lock").read_bytes() == (PROJECT_ROOT / "uv.lock").read_bytes()
    assert _cli(capsys, "reproduce", target)[0] == 0  # the same commit and lock elsewhere: the same code

    with open(checkout / "uv.lock", "a", encoding="utf-8") as lock:
        lock.write("\n# an upgraded library\n")
    changed = hashlib.sha256((checkout / "uv.lock").read_bytes()).hexdigest()
    code, out, err = _cli(capsys, "reproduce", target)
    assert code == 1 and out == ""
    assert f"uv.lock sha256: recorded {LOCK_SHA256}, checkout {changed}" in err and "--allow-code-drift" in err
    assert "git commit:" not in err  # the commit is the recorded one

    code, out, err = _cli(capsys, "reproduce", target, "--allow-code-drift")
    assert code == 0, err
    assert f"note: code drift allowed (--allow-code-drift): retrained with this checkout, not the recorded code: " \
           f"uv.lock sha256: recorded {LOCK_SHA256}, checkout {changed}" in out  # fmt: skip
    run_id = out.splitlines()[-2].removeprefix("logged as run ")
    assert MlflowClient().get_run(run_id).data.tags["mlops.code_drift"] == "true"


def test_the_card_dag_writes_the_current_champions_card(cancer: UseCase, champion: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    from mlops.orchestration.cards import build_card_dag
    from mlops.settings import get_settings

    run = build_card_dag(cancer).test()
    assert str(run.state) == "success"
    path = get_settings().cards_dir / cancer.name / "champion.md"
    assert task_xcom(f"model_card_{cancer.name}", "refresh_champion_card", run.run_id) == str(path)
    card = path.read_text()
    assert card.startswith(f"*The current `@champion` of `{cancer.model_name}`: v{champion['version']}, since ")
    assert f"# Model card: {cancer.model_name} v{champion['version']}" in card
    description = MlflowClient().get_registered_model(cancer.model_name).description
    assert description == card
