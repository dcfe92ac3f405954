"""Every library of the stack imports together.

A broken resolution (such as evidently under pandas 3) must fail CI here rather
than a DAG at run time.
"""

import importlib

import pytest

STACK = [
    "airflow.sdk",
    "airflow.providers.standard.operators.hitl",
    "mlflow",
    "mlflow.sklearn",
    "great_expectations",
    "evidently",
    "evidently.presets",
    "pandas",
    "sklearn",
    "dvc.repo",
    "fastapi",
    "pyarrow.parquet",
]


@pytest.mark.parametrize("module", STACK)
def test_library_imports(module: str) -> None:
    assert importlib.import_module(module) is not None


def test_pandas_below_3_for_evidently() -> None:
    import pandas

    assert int(pandas.__version__.split(".")[0]) < 3, "evidently 0.7 does not import under pandas 3"
    from evidently import Report  # noqa: F401  the import that breaks under pandas 3
