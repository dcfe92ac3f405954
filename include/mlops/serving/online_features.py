"""A store-backed use case's requests completed from the Feast online store (docs/features.md).

The client sends the entity keys (`feature_store.entity_keys`, e.g. `hour`) and the
request-time features; the rest of each record comes from the online store inside the
prediction micro-batch (serving/microbatch.py): the batch that gathers the requests reads the
store once for all their entity keys, validates the values into their rows, predicts, and the
values used are logged. A request thus never waits for a read of its own before it can join a
batch (docs/features.md, the serving benchmark). The rules:

- an entity key missing or not a string: 422 naming the record and the key (checked before batching);
- a store feature sent by the client: 422 (the store is the one source of those values; before batching);
- an entity the store holds nothing for: under `serving.missing: impute` its features are
  null and the pipeline imputes them (logged as null); under `refuse` a 422 naming it;
- the store unreachable: 503, and `/health` degraded until a read succeeds again; never a
  guessed value.

Each request of a batch gets its own answer: one request's unknown entity or bad store value
fails that request only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.config import UseCase
from mlops.features.store import FeatureRepo, FeatureStoreError, OnlineReader
from mlops.serving.schema import RequestError

if TYPE_CHECKING:
    from mlops.serving.schema import InputSchema

log = logging.getLogger("mlops.serving")


class StoreRequestError(RequestError):
    """The store could not complete a request (down, or its entity unknown under `refuse`): the same answer
    whichever version would have predicted it, so it never counts against a canary."""


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

    def prepare(self, payload: Any) -> tuple[Any, StoreLookup | None]:
        """`payload` without its entity keys, and what the micro-batch will look up for it; RequestError (422)
        for a missing or malformed key or a store feature sent by the client (no store read needed to tell)."""
        if type(payload) is not dict:
            return payload, None  # the schema's parse names the problem
        single = "record" in payload
        records = [payload["record"]] if single else payload.get("records")
        if not isinstance(records, list) or not records or not all(type(r) is dict for r in records):
            return payload, None
        loc: list[str | int] = ["body", "record"] if single else ["body", "records"]
        entity_rows = self._entity_rows(records, loc, single)
        keys = self.entity_keys
        stripped = [{k: v for k, v in record.items() if k not in keys} for record in records]
        out = dict(payload)
        if single:
            out["record"] = stripped[0]
        else:
            out["records"] = stripped
        return out, StoreLookup(self, entity_rows, loc, single)

    async def fill(
        self, schema: InputSchema, batch: list[tuple[list[list[Any]], StoreLookup]]
    ) -> list[StoreRequestError | None]:
        """Read the store once for every request of a micro-batch and validate its values into each request's
        rows (in place): per request, None when its rows are complete, else the RequestError to answer it with."""
        entity_rows = [row for _, lookup in batch for row in lookup.entity_rows]
        try:
            values = await self.reader.read_async(entity_rows)
        except FeatureStoreError as exc:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                log.warning("use case %s: the online feature store fails: %s", self.use_case, exc)
            self.last_error = str(exc)
            detail = [{"loc": ["feature_store"], "msg": f"{exc}; no prediction without its features",
                       "type": "unavailable"}]  # fmt: skip
            return [StoreRequestError(503, detail) for _ in batch]
        self.failing_since, self.lookups = None, self.lookups + len(batch)
        outcome: list[StoreRequestError | None] = []
        start = 0
        for rows, lookup in batch:
            found = values[start : start + len(rows)]
            start += len(rows)
            errors: list[dict[str, Any]] = []
            unknown = 0
            for i, (row, entity) in enumerate(zip(rows, found, strict=True)):
                at = lookup.loc if lookup.single else [*lookup.loc, i]
                features = {name: entity.get(name) for name in self.names}
                if all(value is None for value in features.values()):
                    unknown += 1
                    if self.refuse_unknown:
                        errors.append(self._unknown(at, lookup.entity_rows[i]))
                        continue
                schema.fill_store_values(row, features, at, errors)
            self.unknown_entities += unknown
            outcome.append(StoreRequestError(422, errors) if errors else None)
        return outcome

    def _entity_rows(self, records: list[dict[str, Any]], loc: list[str | int], single: bool) -> list[dict[str, Any]]:
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

    def _unknown(self, at: list[str | int], keys: dict[str, Any]) -> dict[str, Any]:
        return {
            "loc": at,
            "type": "unknown_entity",
            "msg": f"the feature store holds no features for {keys} (serving.missing is refuse); "
            "check the key, or that materialize_features has loaded it",
        }


@dataclass(frozen=True)
class StoreLookup:
    """What one request needs from the store: its records' entity keys, and where its records are (for errors)."""

    online: OnlineFeatures
    entity_rows: list[dict[str, Any]]
    loc: list[str | int]
    single: bool
