"""Lineage and reproducibility: where a model version came from, retraining it as recorded, its model card.

- `gather`: what a person names (`model@alias`, `model/version`, a request id) resolved, its records read;
- `chain`, `history`: the records assembled into a chain, the aliases over time (pure);
- `render`, `card`: the chain as terminal text and as a Markdown model card (pure);
- `cards`: model cards logged with each version and kept for the current champion;
- `reproduce`: the recorded candidate retrained on the restored snapshot, every metric compared.
"""
