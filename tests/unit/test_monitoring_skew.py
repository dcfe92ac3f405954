"""Training/serving skew, pure: served store features against the offline values of the same keys and times."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.monitoring.skew import kinds, measure_skew

KEYS, NAMES = ["hour"], ["temp", "weathersit"]


def _frames(n: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    offline = pd.DataFrame({"temp": rng.normal(15, 5, n), "weathersit": rng.choice(["Clear", "Mist"], n)})
    served = offline.assign(hour=[f"2011-05-{1 + i // 24:02d}T{i % 24:02d}" for i in range(n)])
    return served, offline


def test_served_values_equal_to_the_offline_ones_are_no_skew() -> None:
    served, offline = _frames()
    served.loc[3, "temp"] = np.nan
    offline.loc[3, "temp"] = np.nan  # null on both sides: the same
    skew = measure_skew(served, offline, KEYS, NAMES, 0.01)
    assert skew.findings == [] and skew.features["temp"].differing == 0 and skew.rows == 200


def test_a_share_of_differing_values_over_the_bound_is_a_finding_naming_an_example() -> None:
    served, offline = _frames()
    served.loc[10:19, "temp"] += 1.5  # 10 of 200 = 5 %
    served.loc[50, "weathersit"] = "Heavy Rain"  # 1 of 200 = 0.5 %: under the bound
    offline.loc[60, "temp"] = np.nan  # a value on one side only differs too
    skew = measure_skew(served, offline, KEYS, NAMES, 0.01)
    assert skew.features["temp"].differing == 11 and skew.features["weathersit"].differing == 1
    assert len(skew.findings) == 1
    finding = skew.findings[0]
    assert finding.startswith("feature 'temp': 11 of 200 served values (5.5%) differ from the offline store's")
    assert "hour '2011-05-01T10': served" in finding and "not a reason to retrain" in finding


def test_a_feature_logged_with_another_type_than_in_training_is_a_finding() -> None:
    served, offline = _frames()
    trained = kinds(offline, NAMES)
    assert trained == {"temp": "number", "weathersit": "text"}
    skew = measure_skew(served.assign(temp=served["temp"].astype(str)), offline, KEYS, NAMES, 0.01, trained)
    assert skew.schema == ["temp"]
    assert any("'temp' is logged as text but trained as number" in f for f in skew.findings)
