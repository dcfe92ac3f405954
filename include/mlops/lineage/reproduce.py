"""Retrain a registered version from its recorded facts and show that the numbers come out the same.

`reproduce` reads as its steps: restore the snapshot's exact bytes by md5, check the
recorded commit and lock file against this checkout, rebuild the recorded candidate
(estimator, parameters, seed, holdout split) with the training code's own functions
(`mlops.training.runs.load_train_holdout`, `mlops.training.candidates.fit_candidate`), log
the retraining in the `<use case>-reproduce` experiment, and compare every recorded metric.
A snapshot that cannot be restored, or code that differs without `allow_code_drift`, stops
it with a `ReproduceError` saying why.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlops.config import METRIC_DIRECTIONS, UseCase
from mlops.lineage.chain import Records
from mlops.lineage.gather import gather, resolve
from mlops.mlflow import lineage as mlflow_lineage
from mlops.mlflow.runs import RunRecord
from mlops.naming import (
    TAG_CANDIDATE_KEY,
    TAG_CANDIDATE_SPEC,
    TAG_CODE_DRIFT,
    TAG_DVC_MD5,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_REPRODUCED,
    TAG_REPRODUCES,
    TAG_UV_LOCK,
    reproduce_experiment,
)


class ReproduceError(RuntimeError):
    """The version cannot be retrained as recorded; the message says why and what to do."""


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    recorded: float
    reproduced: float | None
    difference: float | None
    agrees: bool


@dataclass(frozen=True)
class CodeCheck:
    """The recorded code version against this checkout's."""

    recorded_commit: str
    current_commit: str
    recorded_lock: str
    current_lock: str
    recorded_dirty: str
    current_dirty: str

    @property
    def mismatches(self) -> list[str]:
        found = []
        if self.recorded_commit != self.current_commit:
            found.append(f"git commit: recorded {self.recorded_commit}, checkout {self.current_commit}")
        if self.recorded_lock != self.current_lock:
            found.append(f"uv.lock sha256: recorded {self.recorded_lock}, checkout {self.current_lock}")
        return found


@dataclass(frozen=True)
class Reproduction:
    model_name: str
    version: str
    use_case: str
    candidate_key: str
    snapshot_md5: str
    code: CodeCheck
    code_drift_allowed: bool
    tolerance: float
    metrics: list[MetricComparison]
    rows: dict[str, tuple[int | None, int]]
    """`n_train`/`n_holdout`: [recorded, reproduced]."""
    run_id: str
    notes: list[str] = field(default_factory=list)

    @property
    def agreed(self) -> bool:
        """Every recorded metric agrees, and the split has the recorded sizes."""
        same_split = all(old is None or old == new for old, new in self.rows.values())
        return bool(self.metrics) and all(m.agrees for m in self.metrics) and same_split

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agreed": self.agreed, "code_mismatches": self.code.mismatches}


def reproduce(
    target: str, *, use_case: str | None = None, allow_code_drift: bool = False, tolerance: float = 0.0
) -> Reproduction:
    """Retrain `model@alias` or `model/version` as recorded and compare every recorded metric."""
    if tolerance < 0:
        raise ReproduceError(f"--tolerance must be 0 (exact) or more, got {tolerance}")
    records = gather(resolve(target, use_case), check_snapshot=False)
    run = _training_run(records)
    uc = _recorded_use_case(records)
    spec = _recorded_candidate(uc, run)
    with tempfile.TemporaryDirectory(prefix="mlops-reproduce-") as scratch:
        snapshot = _restore_snapshot(run, Path(scratch))
        code = _check_code(run, allow_code_drift)
        metrics, rows = _retrain(uc, spec, snapshot)
    comparisons = compare_metrics(run.metrics, metrics, tolerance)
    recorded_rows = {key: run.params.get(key) for key in ("n_train", "n_holdout")}
    result = Reproduction(
        model_name=records.version.name,
        version=records.version.version,
        use_case=uc.name,
        candidate_key=str(spec["key"]),
        snapshot_md5=run.tags[TAG_DVC_MD5],
        code=code,
        code_drift_allowed=allow_code_drift,
        tolerance=tolerance,
        metrics=comparisons,
        rows={k: (int(v) if v and v.isdigit() else None, rows[k]) for k, v in recorded_rows.items()},
        run_id="",
        notes=_notes(records, code, allow_code_drift),
    )
    return _log_reproduction(result, run, spec, metrics)


# ----------------------------------------------------------------------------- the steps, in order


def _training_run(records: Records) -> RunRecord:
    run = records.training_run
    if run is None:
        raise ReproduceError(
            f"{records.version.name} v{records.version.version} names no training run MLflow still has "
            f"(run id {records.version.run_id}); nothing records how it was trained"
        )
    if not run.tags.get(TAG_DVC_MD5):
        raise ReproduceError(f"training run {run.run_id} recorded no DVC md5 of its snapshot; its data is unknown")
    return run


def _recorded_use_case(records: Records) -> UseCase:
    if records.use_case is None:
        raise ReproduceError(
            f"no config for {records.version.name}: its training run recorded none and no configured use case "
            "registers this model; restore the config file it was trained under into the configs folder"
        )
    return records.use_case


def _recorded_candidate(uc: UseCase, run: RunRecord) -> dict[str, Any]:
    """The candidate as its run recorded it; older runs name only its key, looked up in the config's grid."""
    recorded = run.tags.get(TAG_CANDIDATE_SPEC)
    if recorded:
        spec: dict[str, Any] = json.loads(recorded)
        return spec
    from mlops.training.candidates import expand_candidates

    key = run.tags.get(TAG_CANDIDATE_KEY)
    found = next((s for s in expand_candidates(uc) if s.key == key), None)
    if found is None:
        raise ReproduceError(
            f"training run {run.run_id} recorded candidate {key!r} without its parameters, and the config's grid "
            f"no longer has it; add it back to configs/{uc.name}.yaml to retrain it"
        )
    return found.to_dict()


def _restore_snapshot(run: RunRecord, scratch: Path) -> str:
    """The snapshot's exact bytes, restored by md5 (the cache, then the remotes; every copy hash-checked)."""
    from mlops.data import versioning

    md5 = run.tags[TAG_DVC_MD5]
    try:
        return str(versioning.restore(md5, scratch / "snapshot.parquet"))
    except versioning.VersioningError as exc:
        raise ReproduceError(f"cannot restore the training snapshot (DVC md5 {md5}): {exc}") from exc


def _check_code(run: RunRecord, allow_code_drift: bool) -> CodeCheck:
    from mlops.training.runs import git_commit, git_dirty, uv_lock_sha256

    code = CodeCheck(
        recorded_commit=run.tags.get(TAG_GIT_COMMIT, "not recorded"),
        current_commit=git_commit(),
        recorded_lock=run.tags.get(TAG_UV_LOCK, "not recorded"),
        current_lock=uv_lock_sha256(),
        recorded_dirty=run.tags.get(TAG_GIT_DIRTY, "not recorded"),
        current_dirty=git_dirty(),
    )
    if code.mismatches and not allow_code_drift:
        raise ReproduceError(
            "the checkout is not the code that trained this version: "
            + "; ".join(code.mismatches)
            + ". Check out the recorded commit and run `uv sync --frozen`, or pass --allow-code-drift to retrain "
            "with this checkout anyway (the result then says so)"
        )
    return code


def _retrain(uc: UseCase, spec: dict[str, Any], snapshot: str) -> tuple[dict[str, float], dict[str, int]]:
    """Fit the candidate exactly as a training task does; returns its holdout metrics and split sizes."""
    from mlops.training.candidates import CandidateSpec, fit_candidate
    from mlops.training.runs import load_train_holdout

    train_df, holdout_df = load_train_holdout(uc, snapshot)
    fit = fit_candidate(uc, CandidateSpec.from_dict(spec), train_df, holdout_df)
    return dict(fit.metrics), {"n_train": fit.n_train, "n_holdout": fit.n_holdout}


def compare_metrics(
    recorded: dict[str, float], reproduced: dict[str, float], tolerance: float
) -> list[MetricComparison]:
    """Every recorded holdout metric beside its retrained value; equal, or within `tolerance` relative to it."""
    rows = []
    for metric in sorted(m for m in recorded if m in METRIC_DIRECTIONS):
        old, new = recorded[metric], reproduced.get(metric)
        if new is None:
            rows.append(MetricComparison(metric, old, None, None, False))
            continue
        difference = new - old
        agrees = new == old if tolerance == 0 else abs(difference) <= tolerance * abs(old)
        rows.append(MetricComparison(metric, old, new, difference, agrees))
    return rows


def _notes(records: Records, code: CodeCheck, allow_code_drift: bool) -> list[str]:
    notes = [f"config: {records.use_case_origin}"]
    if code.mismatches:
        notes.append(
            "code drift allowed (--allow-code-drift): retrained with this checkout, not the recorded code: "
            + "; ".join(code.mismatches)
        )
    if "true" in (code.recorded_dirty, code.current_dirty):
        notes.append(
            f"uncommitted changes (at training: {code.recorded_dirty}, now: {code.current_dirty}): "
            "the commit alone does not pin the code"
        )
    return notes


def _log_reproduction(
    result: Reproduction, run: RunRecord, spec: dict[str, Any], metrics: dict[str, float]
) -> Reproduction:
    """The retraining as a run of `<use case>-reproduce`; returns the result with its run id."""
    logged = mlflow_lineage.log_reproduction(
        reproduce_experiment(result.use_case),
        f"{result.model_name}-v{result.version}",
        tags={
            TAG_REPRODUCES: f"{result.model_name}/{result.version}",
            TAG_CODE_DRIFT: str(bool(result.code.mismatches)).lower(),
            TAG_REPRODUCED: str(result.agreed).lower(),
            "mlops.reproduces.run_id": run.run_id,
            TAG_DVC_MD5: result.snapshot_md5,
            TAG_GIT_COMMIT: result.code.current_commit,
            TAG_UV_LOCK: result.code.current_lock,
        },
        params={**{k: json.dumps(v) for k, v in dict(spec["params"]).items()}, "estimator": spec["estimator"]},
        metrics=metrics,
        documents={},
    )
    final = replace(result, run_id=logged.run_id)
    mlflow_lineage.log_text(logged.run_id, "reproduction.json", json.dumps(final.to_dict(), indent=2))
    return final


def render_table(result: Reproduction) -> str:
    """The comparison as a table (every value in full: an exact comparison needs every digit) and the verdict."""
    header = f"reproduce {result.model_name} v{result.version} ({result.candidate_key}, snapshot {result.snapshot_md5})"
    rows = [["metric", "recorded", "reproduced", "difference", ""]]
    for m in result.metrics:
        reproduced = repr(m.reproduced) if m.reproduced is not None else "missing"
        difference = repr(m.difference) if m.difference is not None else "–"
        rows.append([m.metric, repr(m.recorded), reproduced, difference, "ok" if m.agrees else "DIFFERS"])
    for name, (old, new) in result.rows.items():
        same = old is None or old == new
        rows.append([name, str(old), str(new), str(new - old) if old is not None else "–", "ok" if same else "DIFFERS"])
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    exact = "exactly" if result.tolerance == 0 else f"within a relative tolerance of {result.tolerance:g}"
    verdict = (
        f"reproduced: every recorded metric agrees {exact}"
        if result.agreed
        else f"NOT reproduced: the metrics marked DIFFERS do not agree {exact}"
    )
    lines = [header, *table, *(f"note: {n}" for n in result.notes), f"logged as run {result.run_id}", verdict]
    return "\n".join(lines)
