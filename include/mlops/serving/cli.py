"""Command line of the prediction service; runs uvicorn with uvloop and httptools."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from mlops.processes import require_free_port
from mlops.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    p = argparse.ArgumentParser(
        prog="python -m mlops.serving", description="Serve the @champion model of every use case."
    )
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.serving_port)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each polls and logs on its own)")
    p.add_argument("--configs-dir", default=None, help="use-case YAML folder (default settings.configs_dir)")
    p.add_argument("--use-case", action="append", default=[], help="serve only this use case (repeatable)")
    p.add_argument("--alias", default="champion", help="registry alias to serve and follow")
    p.add_argument("--poll-seconds", type=float, default=5.0, help="how often to check the alias for a new version")
    p.add_argument(
        "--log-uri", default=None, help="prediction log folder or SQLAlchemy URL (default settings.prediction_log_uri)"
    )
    p.add_argument(
        "--log-queue-size", type=int, default=10_000, help="requests buffered for the log writer before dropping"
    )
    p.add_argument("--log-flush-seconds", type=float, default=1.0, help="how often the log writer appends to the store")
    p.add_argument(
        "--batch-window-ms", type=float, default=1.0,
        help="how long a request waits for others to share one predict call (0: same event-loop turn only)",
    )  # fmt: skip
    p.add_argument(
        "--no-array-predict", dest="array_predict", action="store_false",
        help="always predict through Pipeline.predict on a DataFrame (the array path is checked at load time)",
    )  # fmt: skip
    p.add_argument(
        "--no-spool", dest="spool", action="store_false",
        help="buffer the prediction log in memory only: a SIGKILL loses up to --log-flush-seconds of answered "
        "predictions (default: appended to a local spool file before answering)",
    )  # fmt: skip
    p.add_argument("--spool-dir", default=None, help="the spool's folder (default: MLOPS_HOME/spool/<log>)")
    p.add_argument("--max-body-bytes", type=int, default=1_048_576)
    p.add_argument("--max-records", type=int, default=10_000)
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from mlops.serving.config import CONFIG_ENV, ServingConfig

    args = build_parser().parse_args(argv)
    config = ServingConfig(
        configs_dir=args.configs_dir,
        use_cases=list(args.use_case),
        alias=args.alias,
        poll_seconds=args.poll_seconds,
        log_uri=args.log_uri,
        log_queue_size=args.log_queue_size,
        log_flush_seconds=args.log_flush_seconds,
        max_body_bytes=args.max_body_bytes,
        max_records=args.max_records,
        batch_window_ms=args.batch_window_ms,
        array_predict=args.array_predict,
        spool=args.spool,
        spool_dir=args.spool_dir,
    )
    config.load_use_cases()  # fail here, with the config error, not inside a worker
    require_free_port(args.host, args.port, "the prediction service", "MLOPS_SERVING_PORT")
    os.environ[CONFIG_ENV] = config.to_env()
    # Download progress bars would fill the service log at every hot swap.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uvicorn.run(
        "mlops.serving.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=20,
    )
    return 0
