"""The project's Feast feature repository: definitions only (docs/features.md).

`feature_store.yaml` is not kept here: include/mlops/features/store.py builds the
RepoConfig in code so MLOPS_HOME decides where the registry and the stores live.
"""
