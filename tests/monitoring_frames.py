"""Synthetic bike_sharing feature frames shared by the monitoring tests (a test module cannot import another)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def bike_frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "temp": rng.uniform(0.1, 0.5, rows) + shift,
            "atemp": rng.uniform(0.1, 0.5, rows) + shift,
            "hum": rng.uniform(0.3, 0.9, rows) - shift,
            "windspeed": rng.uniform(0.0, 0.4, rows) + shift,
            "season": rng.choice([1, 2] if not shift else [3, 4], rows),
            "hr": rng.integers(0, 24, rows),
            "holiday": rng.choice([0, 1], rows, p=[0.97, 0.03]),
            "weekday": rng.integers(0, 7, rows),
            "workingday": rng.choice([0, 1], rows),
            "weathersit": rng.choice([1, 2, 3], rows, p=[0.6, 0.3, 0.1]),
        }
    )
    frame["cnt"] = (200 + 400 * frame["temp"] + rng.normal(0, 30, rows)).round()
    return frame
