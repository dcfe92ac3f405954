"""The prediction log and the labels store: one place every prediction lands.

- `predictions`: append predictions, replace a batch partition, read a window with its labels;
- `labels`: write the ground truth that arrives later, read it back one label per request id;
- `frames`: `PredictionBatch` and the log rows it becomes (column order and types);
- `stores`: the backends (a Parquet folder or an SQL database) and which one a URI names.
"""
