"""Monitoring: drift, data quality and performance of a prediction window, and the retraining decision.

- `window`: collect the window from the prediction log, read it, validate it (Great Expectations);
- `reference`: the champion's training snapshot, found through its lineage;
- `run`: one monitoring run, its drift, quality and performance reports (`run_monitoring`);
- `reports`: the report folder and the Evidently reports (the only Evidently import);
- `drift`: Evidently's default drift tests, computed exactly and fast for large windows;
- `performance`: the window's metrics, computed as the champion's holdout metrics were;
- `decision`: the pure retraining decision and its guards (`decide`);
- `assessment`: the DAG's decisive step, which chains them and records the run in MLflow.
"""
