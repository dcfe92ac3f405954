"""Training/serving skew: the feature values the service used, against the offline store's for the same keys.

For a store-backed use case the prediction log holds, per row, the entity keys the client
sent and the values the online store gave. The offline store is asked for the same keys
as of each row's event time (the point-in-time join training uses), and each store feature
is compared: the share of rows whose served value differs from the offline one (numbers
beyond a relative 1e-9, text unequal, a value on one side only). A share above
`monitoring.max_skew_share` is a skew finding: a bug in the feature pipeline or the
materialization, alerted on its own and never a reason to retrain. The logged types are also
compared with the training snapshot's: a feature logged as text that trained as a number is
a finding too.

`measure_skew` is pure (frames in); `check_skew` reads the offline store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.config import UseCase

if TYPE_CHECKING:
    import pandas as pd

EVENT_TIME = "event_time"


@dataclass(frozen=True)
class FeatureSkew:
    rows: int
    differing: int
    example: str | None = None
    """One differing row, in words: which key, served and offline values."""

    @property
    def share(self) -> float:
        return self.differing / self.rows if self.rows else 0.0


@dataclass
class Skew:
    rows: int
    features: dict[str, FeatureSkew] = field(default_factory=dict)
    schema: list[str] = field(default_factory=list)
    """Features whose logged type is not their training type."""
    findings: list[str] = field(default_factory=list)
    note: str | None = None
    """Why nothing was compared, when nothing was."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["features"] = {k: {**asdict(v), "share": v.share} for k, v in self.features.items()}
        return data


def measure_skew(
    served: pd.DataFrame,
    offline: pd.DataFrame,
    keys: list[str],
    names: list[str],
    max_share: float,
    training_kinds: dict[str, str] | None = None,
) -> Skew:
    """Compare each of `names` row by row (the frames aligned by position); findings above `max_share`."""
    import numpy as np
    import pandas as pd

    skew = Skew(rows=len(served))
    for name in names:
        if name not in served.columns or name not in offline.columns:
            continue
        left, right = served[name].reset_index(drop=True), offline[name].reset_index(drop=True)
        both_null = left.isna() & right.isna()
        one_null = left.isna() ^ right.isna()
        if pd.api.types.is_numeric_dtype(left) and pd.api.types.is_numeric_dtype(right):
            a, b = left.to_numpy(dtype=np.float64), right.to_numpy(dtype=np.float64)
            with np.errstate(invalid="ignore"):
                unequal = ~np.isclose(a, b, rtol=1e-9, atol=0.0)
            differs = (pd.Series(unequal) & ~both_null & ~one_null) | one_null
        else:
            differs = (left.astype(str) != right.astype(str)) & ~both_null | one_null
        count = int(differs.sum())
        example = None
        if count:
            i = int(np.flatnonzero(differs.to_numpy())[0])
            where = ", ".join(f"{k} {_plain(served[k].iloc[i])!r}" for k in keys if k in served.columns)
            example = f"{where}: served {_plain(left.iloc[i])!r}, offline {_plain(right.iloc[i])!r}"
        skew.features[name] = FeatureSkew(len(served), count, example)
        if skew.rows and count / skew.rows > max_share:
            skew.findings.append(
                f"feature {name!r}: {count} of {skew.rows} served values ({count / skew.rows:.1%}) differ from the "
                f"offline store's (over {max_share:.1%}), e.g. {example}; a feature pipeline bug, not a reason to "
                "retrain"
            )
    for name, kind in (training_kinds or {}).items():
        if name in served.columns and _kind(served[name]) != kind:
            skew.schema.append(name)
            skew.findings.append(
                f"feature {name!r} is logged as {_kind(served[name])} but trained as {kind}: serving and training "
                "disagree on its type"
            )
    return skew


def _plain(value: Any) -> Any:
    """A numpy scalar as its Python value, so a finding reads 3.5 and not np.float64(3.5)."""
    return value.item() if hasattr(value, "item") else value


def kinds(frame: pd.DataFrame, names: list[str]) -> dict[str, str]:
    """`number` or `text` per column of `names` in `frame` (the training snapshot's types)."""
    return {n: _kind(frame[n]) for n in names if n in frame.columns}


def _kind(values: pd.Series) -> str:
    import pandas as pd

    return "number" if pd.api.types.is_numeric_dtype(values) else "text"


def check_skew(use_case: UseCase, window: pd.DataFrame, reference: pd.DataFrame) -> Skew | None:
    """The window's served store features against the offline store; None for a use case without a store."""
    import pandas as pd

    from mlops.features import store

    section = use_case.feature_store
    if section is None:
        return None
    names = section.feature_names
    missing = [k for k in [*section.entity_keys, EVENT_TIME] if k not in window.columns]
    if window.empty or missing:
        return Skew(rows=0, note=f"nothing to compare: the window lacks {missing or 'rows'}")
    entity = pd.DataFrame({"event_timestamp": pd.to_datetime(window[EVENT_TIME], utc=True).to_numpy()})
    for key in section.entity_keys:
        entity[key] = window[key].astype(str).to_numpy()
    entity["__mlops_row"] = range(len(entity))
    try:
        joined = store.historical_features(store.FeatureRepo.default(), entity, section.features)
    except store.FeatureStoreError as exc:
        return Skew(rows=0, note=f"the offline store could not be read: {exc}")
    offline = joined.set_index("__mlops_row").reindex(range(len(entity)))
    return measure_skew(
        window.reset_index(drop=True), offline.reset_index(drop=True), list(section.entity_keys), names,
        use_case.monitoring.max_skew_share, kinds(reference, names),
    )  # fmt: skip
