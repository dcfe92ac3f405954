"""Where returning probabilities spends its time on the micro-batch path, without HTTP.

For each benchmark model (the same pipelines as bench.py) and batch size, it times and
cProfiles what one micro-batch costs the service:

- class only, as before issue 17: `array_predictor(frame).tolist()`;
- class + probabilities, as now: `LoadedModel.predict_rows(frame)` (one `predict_proba`,
  the class as `classes_[argmax]`, both as Python lists);
- the response body of each (orjson, as `routes.json_response` encodes it).

    .venv/bin/python benchmarks/serving/profile_proba.py [--rows 1,8,100] [--repeat 2000] [--top 12]

A measurement, not a test. On a machine shared with other work, compare rows of one run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import fit_breast_cancer, fit_flight_delays


def loaded(use_case: str, pipe: Any, inputs: Any) -> Any:
    """A LoadedModel as `serving.models.load_version` builds one, from a pipeline in memory."""
    from mlflow.models import infer_signature

    from mlops.serving.fastpath import compile_array_predictor, compile_array_proba
    from mlops.serving.models import LoadedModel, model_classes
    from mlops.serving.schema import InputSchema

    signature = infer_signature(inputs, pipe.predict(inputs)).to_dict()
    import json

    columns = json.loads(signature["inputs"])
    numeric = [c["name"] for c in columns if c["type"] in ("double", "long")]
    categorical = [c["name"] for c in columns if c["type"] == "string"]
    schema = InputSchema.from_signature(columns, numeric, categorical, use_case=use_case)
    example = inputs.head(5)[schema.names].astype(object)
    probe = schema.to_frame(example.where(example.notna(), None).to_numpy().tolist())
    return LoadedModel(
        use_case=use_case, model_name=use_case, version="1", alias="champion", run_id=None, aliases=(),
        signature=signature, schema=schema, model=pipe, loaded_at=datetime.now(UTC),
        array_predictor=compile_array_predictor(pipe, probe), classes=model_classes(pipe),
        array_proba=compile_array_proba(pipe, probe),
    )  # fmt: skip


def main() -> int:
    import orjson

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="1,8,100", help="rows per micro-batch")
    parser.add_argument("--repeat", type=int, default=2000, help="calls per timing")
    parser.add_argument("--top", type=int, default=12, help="functions shown per profile")
    args = parser.parse_args()
    pipe_bc, inputs_bc, records_bc = fit_breast_cancer()
    pipe_fd, inputs_fd, records_fd, _ = fit_flight_delays()
    models = {
        "breast_cancer": (loaded("breast_cancer", pipe_bc, inputs_bc), records_bc),
        "flight_delays": (loaded("flight_delays", pipe_fd, inputs_fd), records_fd),
    }
    print("| use case | rows | class only µs | class + proba µs | Δ µs | body class only µs | body + proba µs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    profiles = []
    for use_case, (model, records) in models.items():
        for rows in (int(r) for r in args.rows.split(",")):
            batch = [[records[i % len(records)][c] for c in model.schema.names] for i in range(rows)]

            def old(batch: list[list[Any]] = batch, model: Any = model) -> Any:
                return model.array_predictor(model.schema.to_frame(batch)).tolist()

            def new(batch: list[list[Any]] = batch, model: Any = model) -> Any:
                return model.predict_rows(model.schema.to_frame(batch))

            predictions, probabilities = new()

            def old_body(p: Any = predictions) -> bytes:
                return orjson.dumps({"predictions": p})

            def new_body(p: Any = predictions, q: Any = probabilities, m: Any = model) -> bytes:
                return orjson.dumps({"predictions": p, "classes": list(m.classes), "probabilities": q})

            us = {}
            for name, fn in (("old", old), ("new", new), ("old_body", old_body), ("new_body", new_body)):
                # Best of three: the least disturbed by other work on the machine.
                us[name] = min(timeit.repeat(fn, number=args.repeat, repeat=3)) / args.repeat * 1e6
            print(
                f"| {use_case} | {rows} | {us['old']:.0f} | {us['new']:.0f} | {us['new'] - us['old']:+.0f} | "
                f"{us['old_body']:.1f} | {us['new_body']:.1f} |"
            )
            for name, fn in (("class only", old), ("class + probabilities", new)):
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(args.repeat):
                    fn()
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
                profiles.append(f"### {use_case}, {rows} rows, {name}\n{out.getvalue()}")
    print("\n".join(profiles))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
