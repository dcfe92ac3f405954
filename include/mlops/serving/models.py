"""Loaded model versions, and the cache that follows a registry alias.

A poller thread resolves `@champion` (or another alias) every few seconds; when the
version changes it loads the new version completely and only then swaps the reference,
so a request in flight keeps the model object it started with. Loaded versions stay
cached, so a rollback to the previous champion swaps back at once. For a use case with
`deployment.strategy: shadow` it follows `@shadow` the same way, and forgets the shadow
when the alias goes (a shadow is optional; its absence is no error); under `canary` it
follows `@canary`, with the fraction of requests its step tag gives (0 after a guard
breach, which it records on the version: serving/canary.py). The registry is
read through `mlops.mlflow.models`; this module adds the compiled input schema and
the array fast path (serving/fastpath.py) to what it returns.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops.mlflow.models import (
    DownloadedVersion,
    ModelNotFoundError,
    VersionInfo,
    download_version,
    load_input_example,
    load_sklearn_model,
    resolve_alias,
    tag_version,
)
from mlops.naming import (
    CANARY,
    ROLE_CANARY,
    ROLE_CHAMPION,
    ROLE_SHADOW,
    SHADOW,
    TAG_CANARY_BREACH,
    TAG_CANARY_STEP,
)
from mlops.serving.fastpath import ArrayPredictor, compile_array_predictor, compile_array_proba
from mlops.serving.schema import InputSchema

if TYPE_CHECKING:
    import pandas as pd

    from mlops.config import UseCase
    from mlops.serving.canary import Breach
    from mlops.serving.metrics import ServiceMetrics

log = logging.getLogger("mlops.serving")


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version loaded into memory, with its compiled input schema."""

    use_case: str
    model_name: str
    version: str
    alias: str
    run_id: str | None
    aliases: tuple[str, ...]
    signature: dict[str, Any] | None
    schema: InputSchema
    model: Any = field(repr=False)
    loaded_at: datetime
    array_predictor: ArrayPredictor | None = field(default=None, repr=False)
    """The same predictions without DataFrame bookkeeping (serving/fastpath.py); None: Pipeline.predict."""
    classes: tuple[Any, ...] | None = None
    """A classifier's `classes_` (the order of its probabilities); None for a regressor."""
    array_proba: ArrayPredictor | None = field(default=None, repr=False)
    """`predict_proba` on arrays (serving/fastpath.py); None: Pipeline.predict_proba."""

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    def predict_frame(self, frame: pd.DataFrame) -> Any:
        if self.array_predictor is not None:
            return self.array_predictor(frame)
        return self.model.predict(frame)

    def predict_rows(self, frame: pd.DataFrame) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions as Python values and, for a classifier, one probability row per record.

        A classifier is asked once, for `predict_proba`; its class is `classes_[argmax]`,
        which is what scikit-learn's own `predict` returns, without a second pass.
        """
        if self.classes is None:
            return self.predict_frame(frame).tolist(), None
        import numpy as np

        proba = self.array_proba(frame) if self.array_proba is not None else self.model.predict_proba(frame)
        proba = np.asarray(proba, dtype=np.float64)
        labels = np.asarray(self.classes, dtype=object if _mixed(self.classes) else None)
        return labels[proba.argmax(axis=1)].tolist(), proba.tolist()

    def describe(self) -> dict[str, Any]:
        return {
            "use_case": self.use_case,
            "name": self.model_name,
            "version": self.version,
            "alias": self.alias,
            "aliases": list(self.aliases),
            "run_id": self.run_id,
            "uri": self.uri,
            "signature": self.signature,
            "loaded_at": self.loaded_at.isoformat(),
            "predict_path": "arrays" if self.array_predictor is not None else "pipeline",
            "classes": list(self.classes) if self.classes is not None else None,
            "missing": self.schema.missing,
        }


def load_version(
    use_case: UseCase,
    info: VersionInfo,
    alias: str = "champion",
    tracking_uri: str | None = None,
    array_predict: bool = True,
) -> LoadedModel:
    """Download and load one registered version, compile its input schema and, unless told not to,
    its array predictor."""
    downloaded = download_version(info, tracking_uri)
    schema = InputSchema.from_signature(
        downloaded.input_columns,
        use_case.features.numeric,
        use_case.features.categorical,
        missing=use_case.serving.missing,
        use_case=use_case.name,
    )
    model = load_sklearn_model(downloaded)
    classes = model_classes(model) if use_case.task == "classification" else None
    probe = _probe(schema, downloaded) if array_predict else None
    return LoadedModel(
        use_case=use_case.name,
        model_name=info.name,
        version=info.version,
        alias=alias,
        run_id=info.run_id,
        aliases=info.aliases,
        signature=downloaded.signature,
        schema=schema,
        model=model,
        loaded_at=datetime.now(UTC),
        array_predictor=_compiled(compile_array_predictor, model, probe, downloaded, "predict"),
        classes=classes,
        array_proba=_compiled(compile_array_proba, model, probe, downloaded, "predict_proba") if classes else None,
    )


def model_classes(model: Any) -> tuple[Any, ...] | None:
    """The class labels of a fitted classifier with `predict_proba`, as Python values; None otherwise."""
    if not hasattr(model, "predict_proba"):
        return None
    classes = getattr(model, "classes_", None)
    return tuple(classes.tolist() if hasattr(classes, "tolist") else classes) if classes is not None else None


def _mixed(classes: Sequence[Any]) -> bool:
    # An object array keeps labels of mixed type as they are, where numpy would make them all strings.
    return len({type(c) for c in classes}) > 1


def _probe(schema: InputSchema, downloaded: DownloadedVersion) -> pd.DataFrame | Exception:
    """The version's input example plus a row of nulls, as the service builds frames; the exception if none."""
    try:
        example = load_input_example(downloaded)
        if example is None:
            raise ValueError("the version has no input example to check the array path against")
        example = example[schema.names].astype(object)
        rows = example.where(example.notna(), None).to_numpy().tolist()
        # Null categories check the object path; a null number is NaN on both paths alike, and
        # a pipeline without a numeric imputer would fail the probe on it (and lose the array path).
        rows.append(
            [None if c.nullable and c.kind in ("string", "any") else rows[0][j] for j, c in enumerate(schema.columns)]
        )
        return schema.to_frame(rows)
    except Exception as exc:
        return exc


def _compiled(
    compile_fn: Any, model: Any, probe: pd.DataFrame | Exception | None, downloaded: DownloadedVersion, what: str
) -> ArrayPredictor | None:
    """The array path, checked against the Pipeline on the probe rows; None (with a warning) when it cannot be."""
    if probe is None:
        return None
    try:
        if isinstance(probe, Exception):
            raise probe
        compiled: ArrayPredictor = compile_fn(model, probe)
        return compiled
    except Exception as exc:
        log.warning("%s runs %s through the Pipeline: %s", downloaded.uri, what, exc)
        return None


def load_alias(use_case: UseCase, alias: str = "champion", tracking_uri: str | None = None) -> LoadedModel:
    """Resolve `models:/<name>@<alias>` and load that version."""
    return load_version(use_case, resolve_alias(use_case.model_name, alias, tracking_uri), alias, tracking_uri)


class ModelCache:
    """The current model of every use case, kept in step with a registry alias."""

    def __init__(
        self,
        use_cases: Sequence[UseCase],
        alias: str = "champion",
        poll_seconds: float = 5.0,
        keep_versions: int = 3,
        tracking_uri: str | None = None,
        array_predict: bool = True,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.use_cases = {u.name: u for u in use_cases}
        self.shadowed = [u.name for u in use_cases if u.deployment.strategy == "shadow"]
        """Use cases whose `@shadow` is followed too (deployment.strategy: shadow)."""
        self.canaried = [u.name for u in use_cases if u.deployment.strategy == "canary"]
        """Use cases whose `@canary` is followed too (deployment.strategy: canary)."""
        self.metrics = metrics
        self.array_predict = array_predict
        self.alias = alias
        self.poll_seconds = poll_seconds
        self.keep_versions = keep_versions
        self.tracking_uri = tracking_uri
        self._current: dict[str, LoadedModel] = {}
        self._shadow: dict[str, LoadedModel] = {}
        self._shadow_errors: dict[str, str] = {}
        self._canary: dict[str, LoadedModel] = {}
        self._canary_fraction: dict[str, float] = {}
        self._canary_step: dict[str, int] = {}
        self._breached: dict[str, str] = {}
        """Use case → the canary version this process saw breach its guard (its fraction is 0 from then on)."""
        self._canary_errors: dict[str, str] = {}
        self._loaded: dict[str, OrderedDict[str, LoadedModel]] = {name: OrderedDict() for name in self.use_cases}
        self._errors: dict[str, str] = {}
        self._last_poll: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, use_case: str) -> LoadedModel | None:
        # A plain dict read: the poller replaces entries whole, so this never sees half a swap.
        return self._current.get(use_case)

    def get_shadow(self, use_case: str) -> LoadedModel | None:
        """The `@shadow` version scoring beside the champion; None without one (or without strategy shadow)."""
        return self._shadow.get(use_case)

    def get_canary(self, use_case: str) -> tuple[LoadedModel, float] | None:
        """The `@canary` version and the fraction of requests it answers now; None without one."""
        canary = self._canary.get(use_case)
        if canary is None:
            return None
        if self._breached.get(use_case) == canary.version:
            return canary, 0.0
        return canary, self._canary_fraction.get(use_case, 0.0)

    def canaries(self) -> dict[str, LoadedModel]:
        return dict(self._canary)

    def canary_status(self, use_case: str) -> dict[str, Any] | None:
        found = self.get_canary(use_case)
        if found is None:
            return None
        model, fraction = found
        return {"version": model.version, "uri": model.uri, "fraction": fraction,
                "step": self._canary_step.get(use_case), "breached": self._breached.get(use_case) == model.version,
                "loaded_at": model.loaded_at.isoformat()}  # fmt: skip

    def record_breach(self, breach: Breach) -> None:
        """Take the canary off at once in this process, then record the breach on its version, off the
        request path: every replica and every restart reads it from there."""
        use_case = next((n for n, m in self._canary.items() if m.version == breach.version), None)
        if use_case is None:
            return
        model = self._canary[use_case]
        self._breached[use_case] = breach.version
        self._event(use_case, ROLE_CANARY, "rollback")
        log.warning("use case %s: canary version %s taken off: %s", use_case, breach.version, breach.reason)
        value = json.dumps({"check": breach.check, "reason": breach.reason, "at": breach.at,
                            "by": f"serving {socket.gethostname()}:{os.getpid()}"})  # fmt: skip
        threading.Thread(
            target=self._write_breach, args=(model, value), name=f"canary-breach-{use_case}", daemon=True
        ).start()

    def _write_breach(self, model: LoadedModel, value: str) -> None:
        # The registry may be down for a while: the breach holds in this process meanwhile, and is
        # retried until it is on record (a restart before that would resume the canary; said in docs).
        for attempt in range(30):
            try:
                tag_version(model.model_name, model.version, {TAG_CANARY_BREACH: value}, self.tracking_uri)
                return
            except Exception as exc:
                log.warning("recording the canary breach of %s failed (attempt %d): %s", model.uri, attempt + 1, exc)
                if self._stop.wait(min(2.0**attempt, 30.0)):
                    return

    def current(self) -> dict[str, LoadedModel]:
        return dict(self._current)

    def shadows(self) -> dict[str, LoadedModel]:
        return dict(self._shadow)

    def refresh(self) -> None:
        """One polling round: load any version the alias moved to, then swap."""
        for name, use_case in self.use_cases.items():
            try:
                self._follow_alias(name, use_case, self.alias, self._current, ROLE_CHAMPION)
                self._errors.pop(name, None)
            except ModelNotFoundError as exc:
                self._errors[name] = str(exc)
            except Exception as exc:  # the registry may be down; keep serving what we have
                self._errors[name] = f"{type(exc).__name__}: {exc}"
                self._event(name, ROLE_CHAMPION, "error")
                log.warning("polling @%s of %s failed: %s", self.alias, use_case.model_name, exc)
            if name in self.shadowed:
                self._follow_shadow(name, use_case)
            if name in self.canaried:
                self._follow_canary(name, use_case)
        self._last_poll = datetime.now(UTC)

    def _follow_canary(self, name: str, use_case: UseCase) -> None:
        try:
            info = self._follow_alias(name, use_case, CANARY, self._canary, ROLE_CANARY)
            self._canary_errors.pop(name, None)
        except ModelNotFoundError:
            # Promoted or rolled back (or none was set): every request goes to the champion.
            self._canary_errors.pop(name, None)
            gone = self._canary.pop(name, None)
            self._canary_fraction.pop(name, None)
            if gone is not None:
                self._event(name, ROLE_CANARY, "drop")
                log.warning("use case %s: @%s is gone; version %s no longer answers", name, CANARY, gone.version)
            return
        except Exception as exc:  # a registry error keeps the canary and its fraction as they were
            self._canary_errors[name] = f"{type(exc).__name__}: {exc}"
            self._event(name, ROLE_CANARY, "error")
            log.warning("polling @%s of %s failed: %s", CANARY, use_case.model_name, exc)
            return
        steps = use_case.deployment.canary_steps
        step = use_case.deployment.canary_step(info.tags.get(TAG_CANARY_STEP))
        if info.tags.get(TAG_CANARY_BREACH):
            self._breached[name] = info.version  # recorded by this or another replica, before or after a restart
        previous = self._canary_fraction.get(name)
        self._canary_step[name], self._canary_fraction[name] = step, steps[step]
        if previous != steps[step]:
            log.warning("use case %s: canary version %s answers %.0f%% of requests (step %d)", name, info.version,
                        steps[step] * 100, step)  # fmt: skip

    def _follow_shadow(self, name: str, use_case: UseCase) -> None:
        try:
            self._follow_alias(name, use_case, SHADOW, self._shadow, ROLE_SHADOW)
            self._shadow_errors.pop(name, None)
        except ModelNotFoundError:
            # The rollout promoted or rejected it (or none was set): stop shadowing.
            self._shadow_errors.pop(name, None)
            gone = self._shadow.pop(name, None)
            if gone is not None:
                self._event(name, ROLE_SHADOW, "drop")
                log.warning("use case %s: @%s is gone; version %s no longer shadows", name, SHADOW, gone.version)
        except Exception as exc:  # a registry error keeps the shadow we have, like the champion
            self._shadow_errors[name] = f"{type(exc).__name__}: {exc}"
            self._event(name, ROLE_SHADOW, "error")
            log.warning("polling @%s of %s failed: %s", SHADOW, use_case.model_name, exc)

    def _follow_alias(
        self, name: str, use_case: UseCase, alias: str, served: dict[str, LoadedModel], role: str
    ) -> VersionInfo:
        """Serve the version the alias points at, loading it unless it is current or cached."""
        info = resolve_alias(use_case.model_name, alias, self.tracking_uri)
        current = served.get(name)
        if current is not None and current.version == info.version:
            if current.aliases != info.aliases:  # e.g. @previous moved; keep /models truthful
                served[name] = replace(current, aliases=info.aliases)
            return info
        # The champion and the shadow share the cache: a promoted shadow swaps in at once.
        cached = self._loaded[name].get(info.version)
        loaded = (
            replace(cached, alias=alias, aliases=info.aliases)
            if cached
            else load_version(use_case, info, alias, self.tracking_uri, self.array_predict)
        )
        self._keep_loaded(name, loaded)
        served[name] = loaded
        if not cached:
            self._event(name, role, "load")
            # Everything loaded so far (libraries, the model) lives as long as the
            # process: freezing it keeps the cyclic GC from walking those millions
            # of objects in the middle of a request (pauses of tens of ms at p99).
            gc.freeze()
        self._event(name, role, "swap")
        old = current.version if current else None
        log.warning("use case %s: @%s is now %s version %s (was %s)", name, alias, info.name, info.version, old)
        return info

    def _event(self, name: str, role: str, event: str) -> None:
        if self.metrics is not None:
            self.metrics.model_event(name, role, event)

    def _keep_loaded(self, name: str, loaded: LoadedModel) -> None:
        """Remember `loaded` as the most recent version of `name`, forgetting the oldest past keep_versions."""
        versions = self._loaded[name]
        versions[loaded.version] = loaded
        versions.move_to_end(loaded.version)
        while len(versions) > self.keep_versions:
            versions.popitem(last=False)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.refresh()
            self._stop.wait(max(0.0, self.poll_seconds - (time.monotonic() - started)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-alias-poller", daemon=True)
        self._thread.start()

    def signal_stop(self) -> None:
        """Ask the poller to stop after its current round, without waiting for it."""
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def status(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "poll_seconds": self.poll_seconds,
            "last_poll": self._last_poll.isoformat() if self._last_poll else None,
            "errors": dict(self._errors),
            "shadow_errors": dict(self._shadow_errors),
            "canary_errors": dict(self._canary_errors),
        }
