import mlflow


def test_mlflow_server_records_a_run(mlflow_server: str) -> None:
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("fixture-check")
    with mlflow.start_run() as run:
        mlflow.log_metric("x", 1.5)
    assert mlflow.get_run(run.info.run_id).data.metrics["x"] == 1.5
