"""A store-backed use case's requests completed from the Feast online store (docs/features.md).

The client sends the entity keys (`feature_store.entity_keys`, e.g. `hour`) and the
request-time features; the rest of each record comes from the online store before the
record is validated against the model's signature, so what is validated, predicted and
logged is the values actually used. The rules:

- an entity key missing or not a string: 422 naming the record and the key;
- a store feature sent by the client: 422 (the store is the one source of those values);
- an entity the store holds nothing for: under `serving.missing: impute` its features are
  null and the pipeline imputes them (logged as null); under `refuse` a 422 naming it;
- the store unreachable: 503, and `/health` degraded until a lookup succeeds again; never a
  guessed value.

The lookups of one event-loop turn share one store read (`OnlineReader.read_shared`): Redis through
Feast's async API on the event loop, SQLite on a worker thread (docs/features.md, the serving benchmark).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mlops.config import UseCase
from mlops.features.store import FeatureRepo, FeatureStoreError, OnlineReader
from mlops.serving.schema import RequestError

log = logging.getLogger("mlops.serving")


class OnlineFeatures:
    """Completes one use case's records from the online store."""

    def __init__(self, use_case: UseCase, repo: FeatureRepo | None = None) -> None:
        section = use_case.feature_store
        assert section is not None
        self.use_case = use_case.name
        self.entity_keys = list(section.entity_keys)
        self.names = section.feature_names
        self.refuse_unknown = use_case.serving.missing == "refuse"
        self.reader = OnlineReader(repo or FeatureRepo.default(), section.features)
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.lookups = 0
        self.unknown_entities = 0

    def degraded(self) -> bool:
        return self.failing_since is not None

    def stats(self) -> dict[str, Any]:
        return {
            "entity_keys": self.entity_keys,
            "features": self.names,
            "failing": self.degraded(),
            "last_error": self.last_error,
            "lookups": self.lookups,
            "unknown_entities": self.unknown_entities,
        }

    async def complete(self, payload: Any) -> tuple[Any, list[dict[str, str]] | None]:
        """`payload` with each record's store features filled in, and each record's entity keys (logged with
        its prediction: the skew check looks the same keys up offline); RequestError (422, 503) when it cannot."""
        if type(payload) is not dict:
            return payload, None  # the schema's parse names the problem
        single = "record" in payload
        records = [payload["record"]] if single else payload.get("records")
        if not isinstance(records, list) or not all(type(r) is dict for r in records):
            return payload, None
        loc = ["body", "record"] if single else ["body", "records"]
        entity_rows = self._entity_rows(records, loc, single)
        try:
            values = await self.reader.read_shared(entity_rows)
        except FeatureStoreError as exc:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                log.warning("use case %s: the online feature store fails: %s", self.use_case, exc)
            self.last_error = str(exc)
            raise RequestError(
                503,
                [
                    {
                        "loc": ["feature_store"],
                        "msg": f"{exc}; no prediction without its features",
                        "type": "unavailable",
                    }
                ],
            ) from exc
        self.failing_since, self.lookups = None, self.lookups + 1
        completed, unknown = [], []
        for i, (record, found) in enumerate(zip(records, values, strict=True)):
            features = {name: found.get(name) for name in self.names}
            if all(value is None for value in features.values()):
                unknown.append(i)
            completed.append({k: v for k, v in record.items() if k not in self.entity_keys} | features)
        if unknown:
            self.unknown_entities += len(unknown)
            if self.refuse_unknown:
                raise RequestError(422, [self._unknown(loc, single, i, records[i]) for i in unknown])
        out = dict(payload)
        if single:
            out["record"] = completed[0]
        else:
            out["records"] = completed
        return out, entity_rows

    def _entity_rows(self, records: list[dict[str, Any]], loc: list[str], single: bool) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        rows = []
        for i, record in enumerate(records):
            at = loc if single else [*loc, i]
            for name in self.names:
                if name in record:
                    errors.append({"loc": [*at, name], "type": "extra_forbidden",
                                   "msg": f"{name!r} comes from the feature store; send only the entity keys "
                                   f"{self.entity_keys} and the request features"})  # fmt: skip
            row = {}
            for key in self.entity_keys:
                value = record.get(key)
                if type(value) is not str or not value:
                    got = "missing" if key not in record else f"got {type(value).__name__} {value!r}"
                    errors.append({"loc": [*at, key], "type": "entity_key",
                                   "msg": f"entity key {key!r} is required as a non-empty string; {got}"})  # fmt: skip
                row[key] = value
            rows.append(row)
        if errors:
            raise RequestError(422, errors)
        return rows

    def _unknown(self, loc: list[str], single: bool, i: int, record: dict[str, Any]) -> dict[str, Any]:
        keys = {k: record.get(k) for k in self.entity_keys}
        return {
            "loc": loc if single else [*loc, i],
            "type": "unknown_entity",
            "msg": f"the feature store holds no features for {keys} (serving.missing is refuse); "
            "check the key, or that materialize_features has loaded it",
        }
