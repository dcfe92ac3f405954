"""A model card in Markdown, written from a version's lineage chain and its use case's config.

Pure: `render_card` turns facts into text. `mlops.lineage.cards` logs it with the version
at registration and keeps the current champion's card up to date.
"""

from __future__ import annotations

from mlops.config import UseCase
from mlops.evaluation.gate import fmt
from mlops.lineage.chain import Chain, GateFacts

NO_LIMITATIONS = "None stated: set `model_card.limitations` in the use case's config."


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def _intended_use(chain: Chain, uc: UseCase | None) -> list[str]:
    if uc is None:
        return ["## Intended use", "", "Not recorded: no configured use case registers this model.", ""]
    task = f"{uc.task} of `{uc.target}`"
    return [
        "## Intended use",
        "",
        uc.description or f"A {task}.",
        "",
        f"- use case: `{uc.name}` ({task}); owner: {uc.owner}",
        f"- registered model: `{chain.model_name}`, version {chain.version}",
        "",
    ]


def _training_data(chain: Chain, uc: UseCase | None) -> list[str]:
    d = chain.data
    split = ""
    if uc is not None:
        how = (
            f"the latest {uc.training.holdout_fraction:.0%} by `{uc.time_column}`"
            if uc.time_column
            else (f"a {uc.training.holdout_fraction:.0%} split seeded with {uc.training.seed}")
        )
        split = f"; holdout: {how}"
    return [
        "## Training data",
        "",
        f"- source: {d.source}",
        f"- window: [{d.window_start}, {d.window_end})",
        f"- rows: {d.rows if d.rows is not None else 'not recorded'}{split}",
        f"- snapshot: DVC md5 `{d.dvc_md5}` ({d.availability} when this card was written)",
        "",
    ]


def _features(uc: UseCase | None) -> list[str]:
    if uc is None:
        return []
    numeric = ", ".join(f"`{c}`" for c in uc.features.numeric) or "none"
    categorical = ", ".join(f"`{c}`" for c in uc.features.categorical) or "none"
    return ["## Features and target", "", f"- target: `{uc.target}`", f"- numeric: {numeric}",
            f"- categorical: {categorical}", ""]  # fmt: skip


def _metrics(chain: Chain) -> list[str]:
    metrics = chain.training.metrics if chain.training else {}
    if not metrics:
        return ["## Holdout metrics", "", "Not recorded.", ""]
    return ["## Holdout metrics", "", *_table(["metric", "value"], [[k, fmt(v)] for k, v in metrics.items()]), ""]


def _slices(gate: GateFacts, uc: UseCase | None) -> list[str]:
    lines = ["## Metrics per slice", ""]
    features = uc.gate.slices if uc is not None else sorted(gate.candidate_slices)
    if not features:
        return [*lines, "No slices configured (`gate.slices`).", ""]
    metric = uc.gate.primary_metric if uc is not None else "primary metric"
    champion = f"champion v{gate.champion_version}" if gate.champion_version else "champion"
    for feature in features:
        scores = gate.candidate_slices.get(feature, {})
        rows = gate.slice_rows.get(feature, {})
        theirs = gate.champion_slices.get(feature, {})
        lines += [f"### {feature} ({metric} on the holdout)", ""]
        if not rows:
            lines += ["Not scored (the gate recorded no slices for this version).", ""]
            continue
        table = [
            [value, str(count), fmt(scores[value]) if value in scores else "undefined",
             fmt(theirs[value]) if value in theirs else "–"]
            for value, count in rows.items()
        ]  # fmt: skip
        lines += [*_table(["value", "rows", "this version", champion], table), ""]
    return lines


def _gate(gate: GateFacts) -> list[str]:
    verdict = {True: "passed", False: "failed", None: "not judged yet"}[gate.passed]
    checks = gate.checks
    lines = ["## Gate", "", f"The gate {verdict}: {gate.reasons or 'no reasons recorded'}", ""]
    return lines + ([*(f"- {c}" for c in checks), ""] if checks else [])


def _lineage(chain: Chain) -> list[str]:
    t, c, v = chain.training, chain.code, chain.validation
    trigger = chain.trigger
    lines = ["## Lineage", ""]
    if t is not None:
        lines.append(f"- training run `{t.run_id}` ({t.candidate_key}, {t.estimator}); parent run `{t.parent_run_id}`")
    lines += [
        f"- Airflow DAG run `{chain.airflow_dag_id}` / `{chain.airflow_run_id}`",
        f"- code: git commit `{c.git_commit}` (dirty: {c.git_dirty}); uv.lock sha256 `{c.uv_lock_sha256}`",
        f"- validation: {v.result} ({v.statistics}); Data Docs: `{v.data_docs_page or 'not recorded'}`",
        f"- trained because: {trigger.reason if trigger else 'not recorded'}",
    ]
    if trigger and trigger.monitoring_run_id:
        lines.append(f"- monitoring run `{trigger.monitoring_run_id}`; report `{trigger.report}`")
    lines.append(f"- reproduce: `mlops reproduce {chain.model_name}/{chain.version}`")
    return [*lines, ""]


def render_card(chain: Chain, use_case: UseCase | None) -> str:
    """The model card of the chain's version, as Markdown."""
    limitations = use_case.model_card.limitations.strip() if use_case else ""
    lines = [
        f"# Model card: {chain.model_name} v{chain.version}",
        "",
        *_intended_use(chain, use_case),
        *_training_data(chain, use_case),
        *_features(use_case),
        *_metrics(chain),
        *_slices(chain.gate, use_case),
        *_gate(chain.gate),
        "## Approval",
        "",
        chain.approval.describe(),
        "",
        *_lineage(chain),
        "## Known limitations",
        "",
        limitations or NO_LIMITATIONS,
    ]
    return "\n".join(lines) + "\n"
