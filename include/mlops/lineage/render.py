"""A lineage chain as text for a terminal: one line per fact, the most recent use first.

`mlops lineage` prints this; `mlops lineage --json` prints `Chain.to_dict()` instead.
"""

from __future__ import annotations

from mlops.evaluation.gate import fmt
from mlops.lineage.chain import Chain, PredictionFacts, TriggerFacts


def _dirty(state: str) -> str:
    return {"true": "uncommitted changes in the tree", "false": "clean tree"}.get(state, f"tree state {state}")


def _prediction_lines(p: PredictionFacts) -> list[str]:
    inputs = ", ".join(f"{k}={v}" for k, v in p.inputs.items())
    lines = [
        f"prediction {p.request_id} ({p.use_case}, {p.source}): {p.output}",
        f"  event time {p.event_time}, logged {p.logged_at}",
        f"  role: {p.role}",
        f"  inputs: {inputs}",
    ]
    if p.other_columns:
        lines.append("  also logged: " + ", ".join(f"{k}={v}" for k, v in p.other_columns.items()))
    return lines


def _trigger_lines(t: TriggerFacts | None) -> list[str]:
    if t is None:
        return ["trigger: not recorded"]
    lines = [f"trigger: {t.reason}"]
    if t.monitoring_run_id:
        share = f", drift share {fmt(t.drift_share)}" if t.drift_share is not None else ""
        lines.append(
            f"  monitoring run {t.monitoring_run_id} ({t.monitoring_run_key}): {t.action}{share}, "
            f"reference: champion v{t.champion_version}"
        )
    if t.report:
        lines.append(f"  report: {t.report}")
    return lines


def render_text(chain: Chain) -> str:
    """The chain, newest fact first: the prediction, the version and its aliases, then how it was made."""
    lines: list[str] = []
    if chain.prediction is not None:
        lines += _prediction_lines(chain.prediction)
    aliases = " ".join(f"@{a}" for a in chain.aliases) or "no alias now"
    lines.append(f"model {chain.model_name} v{chain.version} ({aliases}), registered {chain.registered_at}")
    lines.append(f"  use case: {chain.use_case or 'unknown'} (config {chain.use_case_origin})")
    lines.append("  aliases over time:" if chain.alias_history else "  aliases over time: none recorded")
    lines += [f"    {c.at}  {c.change} @{c.alias}: {c.cause}" for c in chain.alias_history]
    gate = {True: "passed", False: "failed", None: "not judged"}[chain.gate.passed]
    lines.append(f"gate: {gate}: {chain.gate.reasons or '; '.join(chain.gate.checks) or 'no reasons recorded'}")
    lines.append(f"approval: {chain.approval.describe()}")
    if chain.training is not None:
        t = chain.training
        lines.append(f"training run {t.run_id} ({t.run_name}, {t.status}, started {t.started})")
        lines.append(f"  candidate {t.candidate_key}: {t.estimator}, seed {t.params.get('seed', 'not recorded')}")
        lines.append("  holdout metrics: " + ", ".join(f"{k} {v!r}" for k, v in t.metrics.items()))
        lines.append(f"  parent run {t.parent_run_id} ({t.parent_run_name})")
    else:
        lines.append("training run: not found (the version names no run, or the run is gone)")
    d = chain.data
    lines.append(f"snapshot: DVC md5 {d.dvc_md5}, {d.availability}")
    lines.append(f"  path when trained: {d.snapshot_path}")
    lines.append(f"  source: {d.source}; window [{d.window_start}, {d.window_end}); rows {d.rows}")
    c = chain.code
    lines.append(f"code: git commit {c.git_commit} ({_dirty(c.git_dirty)}); uv.lock sha256 {c.uv_lock_sha256}")
    v = chain.validation
    lines.append(f"validation: {v.result}, {v.statistics}; Data Docs: {v.data_docs_page or 'not recorded'}")
    lines += _trigger_lines(chain.trigger)
    lines.append(f"airflow: DAG run {chain.airflow_dag_id} / {chain.airflow_run_id}")
    return "\n".join(lines)
