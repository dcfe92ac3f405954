"""The serving benchmark's peers module: request bodies, answer parsing, the comparison and the report.

Pure functions only (no server, no venv): benchmarks/serving/peers.py is not a package, so it is
imported from its folder, as bench.py imports it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "serving" / "peers.py"
_SPEC = importlib.util.spec_from_file_location("bench_serving_peers", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
peers = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(peers)

RECORDS = [{"a": 1.0, "b": 2.5}, {"a": 3.0, "b": -1.0}]


def test_mlserver_body_is_a_v2_pandas_request_asking_for_both_outputs() -> None:
    body = peers.body("mlserver", RECORDS)
    assert body["parameters"] == {"content_type": "pd"}
    assert body["inputs"] == [
        {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, 3.0]},
        {"name": "b", "shape": [2], "datatype": "FP64", "data": [2.5, -1.0]},
    ]
    assert [o["name"] for o in body["outputs"]] == ["predict", "predict_proba"]


def test_bentoml_and_ours_take_the_same_body_and_mlflow_a_dataframe_split() -> None:
    assert peers.request_body("bentoml", RECORDS) == peers.request_body("ours", RECORDS) == {"records": RECORDS}
    assert peers.request_body("mlflow", RECORDS) == {
        "dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.5], [3.0, -1.0]]}
    }


def test_answers_parse_to_predictions_and_probability_rows() -> None:
    mlserver = {
        "outputs": [
            {"name": "predict", "shape": [2, 1], "data": [0, 1]},
            {"name": "predict_proba", "shape": [2, 2], "data": [0.9, 0.1, 0.2, 0.8]},
        ]
    }
    assert peers.answer("mlserver", mlserver) == ([0, 1], [[0.9, 0.1], [0.2, 0.8]])
    assert peers.answer("mlflow", {"predictions": [0, 1]}) == ([0, 1], None)
    assert peers.answer("ours", {"predictions": [0], "probabilities": [[1.0, 0.0]]}) == ([0], [[1.0, 0.0]])
    with pytest.raises(ValueError, match="unknown server kind"):
        peers.answer("litserve", {})


def test_compare_names_what_differs() -> None:
    ours = ([0, 1], [[0.9, 0.1], [0.2, 0.8]])
    assert peers.compare("x", ours, ([0, 1], [[0.9, 0.1], [0.2, 0.8 + 1e-12]])) is None
    assert peers.compare("x", ours, ([0, 1], None)) is None  # MLflow answers classes only
    assert "predictions" in str(peers.compare("x", ours, ([1, 0], None)))
    assert "probabilities differ from ours by up to 0.1" in str(
        peers.compare("x", ours, ([0, 1], [[0.8, 0.2], [0.2, 0.8]]))
    )


def _run(kind: str, rows: int, c: int, rps: float, p99: float, peer: str | None = None, **extra: Any) -> dict[str, Any]:
    run = {"server": kind, "kind": kind, "use_case": "breast_cancer", "rows": rows, "connections": c,
           "rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "cpu_ms_per_request": 1.0, "non_2xx": 0,
           "socket_errors": 0, **extra}  # fmt: skip
    return {**run, "peer": peer} if peer else run


def test_report_lists_every_server_per_cell_and_judges_each_configuration_of_ours() -> None:
    results = [
        _run("new", 1, 8, 2000.0, 12.0),
        _run("new", 1, 8, 1000.0, 8.0),  # two runs of ours: the table shows their mean
        _run("new-w2", 1, 8, 400.0, 9.0),
        _run("mlflow", 1, 8, 100.0, 90.0),
        _run("peer", 1, 8, 500.0, 11.0, peer="mlserver"),
        _run("peer", 1, 8, 400.0, 20.0, peer="bentoml", non_2xx=3),
        _run("new", 100, 8, 300.0, 50.0),
        _run("peer", 100, 8, 350.0, 40.0, peer="mlserver"),
        {"server": "rollout off", "kind": "rollout", "mode": "off", "rps": 1.0},  # not a peers' cell
        {"server": "new", "rows": 1, "connections": 8, "rps": 5.0, "profile": {}},  # a profiled run: not a cell
    ]
    lines = peers.report_lines(results)
    assert "| breast_cancer | 1 | 8 | ours | 1500 | 5.00 | 10.00 | 1.00 | 2 |" in lines
    assert "| breast_cancer | 1 | 8 | bentoml | 400 (INVALID) | 10.00 | 20.00 | 1.00 | 1 |" in lines
    assert "| breast_cancer | 1 | 8 | ours | 3.00× (mlserver) | 0.91× (mlserver) | yes |" in lines
    assert "| breast_cancer | 1 | 8 | ours, 2 workers | 0.80× (mlserver) | 0.82× (mlserver) | no |" in lines
    assert "| breast_cancer | 100 | 8 | ours | 0.86× (mlserver) | 1.25× (mlserver) | no |" in lines
    assert not any("rollout" in line for line in lines)
    assert peers.report_lines([_run("new", 1, 8, 1.0, 1.0)]) == []  # nothing to compare with


def test_stacks_summarize_to_inclusive_and_self_shares() -> None:
    raw = "\n".join(
        [
            "run (asyncio/events.py:80);predict (/v/lib/python3.11/site-packages/sklearn/pipeline.py:600) 6",
            "run (asyncio/events.py:80);write (/w/include/mlops/serving/logwriter.py:10) 3",
            "run (asyncio/events.py:81) 1",
            "not a stack line",
        ]
    )
    summary = peers.summarize_stacks(raw)
    assert summary["samples"] == 10
    assert summary["inclusive"] == [("write (mlops/serving/logwriter.py)", 0.3)]  # the package's frames only
    assert ("predict (sklearn/pipeline.py)", 0.6) in summary["self"]
    lines = peers.profile_lines(
        [{"server": "ours", "rows": 1, "connections": 8, "rps": 900.0, "p99_ms": 20.0, "profile": summary}]
    )
    assert "10 samples" in lines[1] and "| `write (mlops/serving/logwriter.py)` | 30.0% |" in lines[5]


def test_the_whole_report_renders_with_peers_profiles_and_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench.write_report on a run's kinds of results (its first run of issue 21 died here after measuring)."""
    import argparse
    import json
    import sys

    monkeypatch.syspath_prepend(str(_PATH.parent))
    monkeypatch.delitem(sys.modules, "bench", raising=False)
    import bench

    results = [
        {"answers_checked": ["mlserver (breast_cancer): same predictions and probabilities as ours"]},
        _run("new", 1, 8, 2000.0, 12.0, repeat=0),
        _run("peer", 1, 8, 500.0, 11.0, peer="mlserver", repeat=0),
        {
            "server": "new",
            "use_case": "breast_cancer",
            "rows": 1,
            "connections": 8,
            "rps": 1900.0,
            "p99_ms": 13.0,
            "profile": peers.summarize_stacks("main (a.py:1);predict (b.py:2) 3"),
        },  # fmt: skip
        {"server": "new", "use_case": "breast_cancer", "logged_rows": 10, "answered_rows": 10, "all_logged": True},
    ]
    facts = {"seconds": 60.0, "load_average_start": 1.0, "load_average_end": 2.0, "baseline": "none"}
    args = argparse.Namespace(workers=1, warmup=1, duration=2, repeats=1, output=str(tmp_path / "report"))
    bench.write_report(results, facts, args)
    text = (tmp_path / "report.md").read_text()
    assert "| breast_cancer | 1 | 8 | ours | 4.00× (mlserver) | 1.09× (mlserver) | no |" in text
    assert "py-spy on new at 1 rows, 8 connections (3 samples" in text
    assert len(json.loads((tmp_path / "report.json").read_text())["runs"]) == len(results)
