"""The live evidence of a rollout: the candidate's labelled requests against the champion's.

Shadow: `pair_rows` keeps the requests both scored whose label has arrived, and the bootstrap
is paired: each resample draws the same requests for both sides, so what varies between them
is the model alone. Canary: each request was answered by one side only, so `split_rows` keeps
each side's own labelled requests of the same window, and the bootstrap resamples each side on
its own (unpaired; it needs more rows for the same certainty). `compare` measures the primary
metric of each side with the holdout's own function (`mlops.training.candidates.
compute_metrics`, through `mlops.monitoring.performance.measure_performance`) and the
interval of the candidate's relative gain. Pure: frames in, a dataclass out.

For a paired classification (a shadow), `compare` adds McNemar's exact test: of the requests
one side got right and the other wrong (the discordant pairs), how many each; under "equally
often right" the candidate's share of them is Binomial(b + c, 1/2), and the two-sided
binomial p-value says how surely their accuracies differ (`mcnemar`; the decision uses it
beside the bootstrap: mlops.rollout.decision). It needs no resampling and no large-sample
approximation, and it reads the answers clients got, whatever the primary metric is.

The resamples are counts per row (a multinomial draw), and every metric is computed from
them with sample weights: the metrics that are means of a per-row loss (rmse, mae, mape,
r2, accuracy, log_loss, precision/recall/f1 from weighted counts) as one matrix product for
all resamples at once; roc_auc, which is not, one weighted call per resample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.config import METRIC_DIRECTIONS
from mlops.naming import PROBA_COLUMN_PREFIX, ROLE_CANARY, ROLE_CHAMPION, ROLE_SHADOW

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

RESAMPLES = 2000
SEED = 0
"""Fixed: the same log gives the same interval and the same decision on every re-run."""
_PAIRED = ("label", "prediction")


@dataclass(frozen=True)
class Evidence:
    """What champion and candidate (the shadow or the canary) did on labelled live requests."""

    metric: str
    direction: str
    """`max` or `min` (mlops.config.METRIC_DIRECTIONS): which way is better."""
    candidate_version: str
    rows: int
    """Labelled requests compared: scored by both (paired), or the fewer of the two sides' (unpaired)."""
    candidate_rows: int
    """Requests the candidate scored (shadow) or answered (canary) in the window, labelled or not."""
    champion_versions: list[str] = field(default_factory=list)
    champion_metric: float | None = None
    candidate_metric: float | None = None
    gain: float | None = None
    """The candidate's relative gain on the metric: positive = better, 0.02 = 2 % better than the champion."""
    interval: tuple[float, float] | None = None
    """The bootstrap interval of `gain` at `confidence`."""
    paired: bool = True
    """True: both sides on the same requests (shadow); False: each on its own requests (canary)."""
    champion_rows: int = 0
    """Labelled champion requests compared (equal to `rows` when paired)."""
    candidate_labelled: int = 0
    """Labelled candidate requests compared (equal to `rows` when paired)."""
    confidence: float = 0.95
    resamples: int = RESAMPLES
    note: str | None = None
    """Why there is no metric or interval, when there is none."""
    champion_only_right: int | None = None
    """Paired classification: requests the champion predicted right and the candidate wrong (McNemar's b)."""
    candidate_only_right: int | None = None
    """Paired classification: requests the candidate predicted right and the champion wrong (McNemar's c)."""
    mcnemar_p: float | None = None
    """McNemar's exact test: the two-sided binomial p-value of c among b + c at 1/2 (1.0 with no discordant
    request); None when it does not apply (a regression, or a canary: unpaired)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = list(self.interval) if self.interval is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        interval = data.get("interval")
        return cls(**{**data, "interval": tuple(interval) if interval is not None else None})


@dataclass(frozen=True)
class Paired:
    """The compared requests: label, prediction and proba columns each; in the same order on both sides when
    `paired`, each side's own requests otherwise."""

    champion: pd.DataFrame
    candidate: pd.DataFrame
    candidate_rows: int
    champion_versions: list[str]
    paired: bool = True


def pair_rows(frame: pd.DataFrame, shadow_version: str) -> Paired:
    """Champion and shadow rows of the same requests whose label has arrived, matched by request id.

    `frame` is `read_predictions(..., with_labels=True)`. Shadow rows are those of
    `shadow_version` only (an earlier shadow's rows are not its evidence); a request
    logged twice by one side counts once, its last row.
    """
    champion, shadow, shadow_rows = _labelled_sides(frame, ROLE_SHADOW, shadow_version)
    champion, shadow = champion.set_index("request_id"), shadow.set_index("request_id")
    common = shadow.index.intersection(champion.index).sort_values()
    champion, shadow = champion.loc[common], shadow.loc[common]
    return Paired(_side(champion), _side(shadow), shadow_rows, _versions(champion))


def split_rows(frame: pd.DataFrame, canary_version: str) -> Paired:
    """The canary's labelled requests (of `canary_version`) and the champion's, of the same window, unpaired.

    `frame` is `read_predictions(..., with_labels=True)` from when the canary began, so both
    sides saw the same hours of traffic; a request logged twice by one side counts once.
    """
    champion, canary, canary_rows = _labelled_sides(frame, ROLE_CANARY, canary_version)
    return Paired(_side(champion), _side(canary), canary_rows, _versions(champion), paired=False)


def _labelled_sides(frame: pd.DataFrame, role_name: str, version: str) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The champion's and the candidate's (`role_name` of `version`) labelled rows, each request once (its
    last row), and how many requests the candidate scored, labelled or not."""
    role = frame["role"].fillna(ROLE_CHAMPION).astype(str) if "role" in frame else ROLE_CHAMPION
    candidate = frame[(role == role_name) & (frame["model_version"].astype(str) == str(version))]
    champion = frame[role == ROLE_CHAMPION]
    scored = int(candidate["request_id"].nunique())
    if "label" in frame:
        candidate, champion = candidate[candidate["label"].notna()], champion[champion["label"].notna()]
    else:
        candidate, champion = candidate.iloc[0:0], champion.iloc[0:0]
    last = champion.drop_duplicates("request_id", keep="last"), candidate.drop_duplicates("request_id", keep="last")
    return last[0], last[1], scored


def _versions(champion: pd.DataFrame) -> list[str]:
    return sorted({str(v) for v in champion["model_version"]}, key=lambda v: (len(v), v))


def _side(rows: pd.DataFrame) -> pd.DataFrame:
    """Label, prediction and the probability columns this side logged (all its rows have them)."""
    proba = [str(c) for c in rows.columns if str(c).startswith(PROBA_COLUMN_PREFIX) and rows[c].notna().all()]
    return rows[[*_PAIRED, *proba]].reset_index(drop=True) if len(rows) else rows[[*_PAIRED]].reset_index(drop=True)


def compare(
    task: str,
    metric: str,
    paired: Paired,
    candidate_version: str,
    *,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Evidence:
    """Both sides' `metric` and the bootstrap interval of the candidate's relative gain (paired or not)."""
    import numpy as np

    from mlops.monitoring.performance import measure_performance

    base = Evidence(
        metric=metric,
        direction=METRIC_DIRECTIONS[metric],
        candidate_version=str(candidate_version),
        rows=min(len(paired.candidate), len(paired.champion)),
        candidate_rows=paired.candidate_rows,
        champion_versions=paired.champion_versions,
        confidence=confidence,
        resamples=resamples,
        paired=paired.paired,
        champion_rows=len(paired.champion),
        candidate_labelled=len(paired.candidate),
    )
    if task != "regression" and paired.paired:
        base = _with(base, **mcnemar(paired.champion, paired.candidate))
    if base.rows == 0:
        missing = "both a champion and a shadow prediction" if paired.paired else "a label on both sides"
        return _with(base, note=f"no request has {missing} with its label yet")
    champion_perf = measure_performance(task, paired.champion)
    candidate_perf = measure_performance(task, paired.candidate)
    champion_value, candidate_value = champion_perf.metrics.get(metric), candidate_perf.metrics.get(metric)
    if champion_value is None or candidate_value is None:
        why = champion_perf.unavailable.get(metric) or candidate_perf.unavailable.get(metric) or "undefined"
        return _with(base, champion_metric=champion_value, candidate_metric=candidate_value, note=f"{metric}: {why}")
    rng = np.random.default_rng(seed)
    champion_counts = _resample_counts(rng, len(paired.champion), resamples)
    # Paired: the same draw for both sides. Unpaired: each side's requests resampled on their own.
    candidate_counts = champion_counts if paired.paired else _resample_counts(rng, len(paired.candidate), resamples)
    gains = relative_gain(
        metric,
        weighted_metric(task, metric, paired.champion, champion_counts),
        weighted_metric(task, metric, paired.candidate, candidate_counts),
    )
    gains = gains[np.isfinite(gains)]
    if gains.size < resamples // 2:
        note = f"{metric} is undefined on most resamples of {base.rows} rows; more labelled rows are needed"
        return _with(base, champion_metric=champion_value, candidate_metric=candidate_value, note=note)
    tail = (1 - confidence) / 2
    low, high = (float(q) for q in np.quantile(gains, [tail, 1 - tail]))
    gain = float(relative_gain(metric, np.array([champion_value]), np.array([candidate_value]))[0])
    return _with(
        base, champion_metric=champion_value, candidate_metric=candidate_value, gain=gain, interval=(low, high)
    )


def mcnemar(champion: pd.DataFrame, candidate: pd.DataFrame) -> dict[str, Any]:
    """McNemar's exact test on paired predictions (the same labelled requests, in the same order)."""
    from scipy.stats import binomtest

    truth = _class_names(champion["label"])
    champion_right = _class_names(champion["prediction"]) == truth
    candidate_right = _class_names(candidate["prediction"]) == truth
    b = int((champion_right & ~candidate_right).sum())
    c = int((candidate_right & ~champion_right).sum())
    p = float(binomtest(c, b + c, 0.5).pvalue) if b + c else 1.0
    return {"champion_only_right": b, "candidate_only_right": c, "mcnemar_p": p}


def _resample_counts(rng: np.random.Generator, rows: int, resamples: int) -> np.ndarray[Any, Any]:
    """How often each row is drawn in each bootstrap resample: one multinomial draw per resample."""
    import numpy as np

    return rng.multinomial(rows, np.full(rows, 1 / rows), size=resamples)


def _with(base: Evidence, **changes: Any) -> Evidence:
    return Evidence(**{**asdict(base), **changes})


def relative_gain(metric: str, champion: np.ndarray[Any, Any], candidate: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """How much better the candidate is, as a fraction of |champion| (negative: worse); absolute where it is 0."""
    import numpy as np

    better_by = champion - candidate if METRIC_DIRECTIONS[metric] == "min" else candidate - champion
    scale = np.abs(champion)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(scale > 0, better_by / np.where(scale > 0, scale, 1.0), better_by), dtype=np.float64)


# --------------------------------------------------------------------------- weighted metrics


def weighted_metric(task: str, metric: str, side: pd.DataFrame, weights: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """`metric` of the side's rows under each row of `weights` (resample counts): one value per resample.

    With weights of one it equals `compute_metrics` on the rows (tests/unit/test_rollout.py).
    """
    import numpy as np

    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n = w.sum(axis=1)
    if task == "regression":
        y = side["label"].to_numpy(dtype=np.float64)
        e = side["prediction"].to_numpy(dtype=np.float64) - y
        if metric == "rmse":
            return np.asarray(np.sqrt((w @ e**2) / n), dtype=np.float64)
        if metric == "mae":
            return np.asarray((w @ np.abs(e)) / n, dtype=np.float64)
        if metric == "mape":
            return np.asarray((w @ (np.abs(e) / np.maximum(np.abs(y), np.finfo(np.float64).eps))) / n, dtype=np.float64)
        if metric == "r2":
            mean = (w @ y) / n
            total = (w @ y**2) - n * mean**2
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(total > 0, 1 - (w @ e**2) / np.where(total > 0, total, 1.0), np.nan)
        raise ValueError(f"{metric!r} is not a regression metric")
    truth, pred = _class_names(side["label"]), _class_names(side["prediction"])
    proba_cols = [c for c in side.columns if str(c).startswith(PROBA_COLUMN_PREFIX)]
    classes = [c[len(PROBA_COLUMN_PREFIX) :] for c in proba_cols] or sorted(set(truth) | set(pred))
    if metric == "accuracy":
        return np.asarray((w @ (truth == pred)) / n, dtype=np.float64)
    if metric in ("precision", "recall", "f1"):
        return _weighted_counts_metric(metric, truth, pred, classes, w)
    if not proba_cols:
        return np.full(len(w), np.nan)
    proba = side[proba_cols].to_numpy(dtype=np.float64)
    if metric == "log_loss":
        index = {c: i for i, c in enumerate(classes)}
        if any(t not in index for t in truth):
            return np.full(len(w), np.nan)
        proba = proba / proba.sum(axis=1, keepdims=True)
        eps = np.finfo(np.float64).eps
        p_true = np.clip(proba[np.arange(len(truth)), [index[t] for t in truth]], eps, 1 - eps)
        return np.asarray((w @ -np.log(p_true)) / n, dtype=np.float64)
    if metric == "roc_auc":
        return _weighted_roc_auc(truth, proba, classes, w)
    raise ValueError(f"{metric!r} is not a classification metric")


def _class_names(values: pd.Series) -> np.ndarray[Any, Any]:
    """Class labels as the text the proba columns name (labels arrive as floats: 1.0 is class "1")."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_float_dtype(values.dtype) and bool((values == values.round()).all()):
        values = values.astype(int)
    return np.asarray([str(v) for v in values], dtype=object)


def _weighted_counts_metric(
    metric: str, truth: np.ndarray[Any, Any], pred: np.ndarray[Any, Any], classes: list[str], w: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """Binary on the positive class (the last), else the macro average, with zero for 0/0 as compute_metrics."""
    import numpy as np

    scored = classes[-1:] if len(classes) == 2 else classes
    values = []
    for c in scored:
        tp = w @ ((truth == c) & (pred == c))
        predicted, actual = w @ (pred == c), w @ (truth == c)
        num, den = {"precision": (tp, predicted), "recall": (tp, actual), "f1": (2 * tp, predicted + actual)}[metric]
        with np.errstate(divide="ignore", invalid="ignore"):
            values.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0))
    return np.asarray(np.mean(values, axis=0), dtype=np.float64)


def _weighted_roc_auc(
    truth: np.ndarray[Any, Any], proba: np.ndarray[Any, Any], classes: list[str], w: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    import numpy as np
    from sklearn import metrics as skm

    out = np.full(len(w), np.nan)
    for i, row in enumerate(w):
        keep = row > 0
        present = set(truth[keep].tolist())
        if len(present) < 2:
            continue
        if len(classes) == 2:
            out[i] = skm.roc_auc_score(truth[keep] == classes[-1], proba[keep, -1], sample_weight=row[keep])
        elif present == set(classes):
            out[i] = skm.roc_auc_score(
                truth[keep], proba[keep], multi_class="ovr", labels=classes, sample_weight=row[keep]
            )
    return out
