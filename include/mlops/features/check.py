"""Check a use case's `feature_store:` section against the feature repository's definitions."""

from __future__ import annotations

from mlops.config import ConfigError, UseCase
from mlops.features.store import FeatureRepo, known_features


def check_use_case(use_case: UseCase, repo: FeatureRepo) -> None:
    """Raise ConfigError for an unknown view, an unknown feature or an entity key the views need but lack."""
    section = use_case.feature_store
    if section is None:
        return
    views = known_features(repo)
    problems: list[str] = []
    for i, ref in enumerate(section.features):
        view, feature = ref.split(":")
        if view not in views:
            problems.append(f"feature_store.features[{i}]: unknown feature view {view!r}; known: {sorted(views)}")
            continue
        if feature not in views[view]["features"]:
            known = views[view]["features"]
            problems.append(f"feature_store.features[{i}]: view {view!r} has no feature {feature!r}; known: {known}")
        for key in views[view]["entities"]:
            if key not in section.entity_keys:
                problems.append(f"feature_store.entity_keys: view {view!r} needs entity {key!r}; add it")
    if problems:
        raise ConfigError(f"use case {use_case.name!r}: " + "; ".join(dict.fromkeys(problems)))
