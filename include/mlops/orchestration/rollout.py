"""Build the rollout DAG of one use case under `deployment.strategy: shadow | canary`: find → judge → apply →
publish.

Runs hourly and whenever the training DAG makes a candidate `@shadow` or `@canary` (the
challenger Asset). The rollout's state is the registry's (the alias and its version's tags:
start time, a canary's step and any breach the service recorded), so every run starts from
it; the decision is pure (`mlops.rollout.decision`) and its clock is the run's, never the
worker's. A rejection (a canary's rollback included) is alerted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from mlops.config import UseCase
from mlops.naming import rollout_dag_id, run_key
from mlops.orchestration.assets import challenger_asset, champion_asset
from mlops.orchestration.defaults import NETWORK_BOUND, REGISTRY, dag_kwargs

ROLLOUT_SCHEDULE = "@hourly"
"""How often the evidence is looked at between challenger events: labels arrive hourly (`labels.schedule`)."""


def _run_time(context: dict[str, Any]) -> datetime:
    """The run's own time (when it was due), naive UTC: the deadline is judged against it."""
    import pendulum

    moment: datetime = pendulum.instance(context["dag_run"].run_after).in_timezone("UTC").naive()
    return moment


def _doc(use_case: UseCase) -> str:
    rules = use_case.deployment
    common = f"""
The decision is on `{use_case.gate.primary_metric}`, with a bootstrap interval of the candidate's relative gain at
{rules.confidence:.0%}: promoted (the same alias move as a promotion: `@champion` moves, `@previous` keeps the
old one, the rollout alias removed, the champion Asset updated) when the interval's lower bound exceeds
{rules.min_improvement:.2%}; rejected (`@challenger`, the alias removed, an alert sent) when its upper bound lies
below; no decision before {rules.min_labeled_rows} labelled rows; rejected at the deadline, {rules.deadline_hours:g} h
after the rollout began. Each run records its evidence on the version (`mlops.rollout.progress`), the final
decision as `mlops.rollout.*` tags.
"""
    if rules.strategy == "canary":
        steps = " → ".join(f"{f:.0%}" for f in rules.canary_steps)
        head = f"""
### Roll out `{use_case.name}`'s canary

While `{use_case.model_name}@canary` exists, the service answers its step's share of requests with it
({steps}, sticky by `X-Routing-Key` or the request id) and rolls it back to 0 % itself when its error rate
passes {rules.canary_max_error_rate:.1%} or its p99 passes {rules.canary_max_latency_ratio:g}x the champion's
+ {rules.canary_latency_slack_ms:g} ms. This DAG turns such a breach into the rollback on record; rolls it back
when it is worse than the champion on labelled requests (each side its own requests, unpaired); moves it a step
on after {rules.canary_min_requests} requests at a step; and at the last step decides as below."""
    else:
        head = f"""
### Roll out `{use_case.name}`'s shadow

While `{use_case.model_name}@shadow` exists, compares it with `@champion` on the same live requests
whose labels have arrived (the prediction log since `@shadow` was set, rows paired by request id)."""
    return (
        head
        + common
        + """
**Params**: `since` (ISO time: read the log from here instead of from the rollout's start, e.g. for
replayed traffic with past event times), `abort` (a reason: end the rollout now with a rejection).
"""
    )


def build_rollout_dag(use_case: UseCase) -> DAG:
    schedule = AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(ROLLOUT_SCHEDULE, timezone="UTC"), assets=[challenger_asset(use_case)]
    )

    @dag(
        schedule=schedule,
        **dag_kwargs(
            rollout_dag_id(use_case.name),
            tags=["rollout", use_case.name, *use_case.tags],
            doc_md=_doc(use_case),
            dagrun_timeout=timedelta(minutes=50),
            owner=use_case.owner,
            access=use_case.access,
            params={
                "since": Param(None, type=["null", "string"], description="Read the log from here (ISO time)"),
                "abort": Param(None, type=["null", "string"], description="End the rollout with this reason"),
            },
        ),
    )
    def rollout() -> None:
        @task(**REGISTRY)
        def find_rollout(**context: Any) -> dict[str, Any]:
            from mlops.rollout import apply

            found = apply.current_rollout(use_case, _run_time(context))
            if found is None:
                # A skip, not a failure: most hours of most use cases have no rollout.
                raise AirflowSkipException(f"no @shadow or @canary of {use_case.model_name}: no rollout in progress")
            return found.to_dict()

        @task(**NETWORK_BOUND)
        def judge_rollout(rollout: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops.predictionlog.frames import to_timestamp
            from mlops.rollout import apply

            since = context["params"].get("since")
            found = apply.Rollout.from_dict(rollout)
            decision = apply.judge_rollout(
                use_case, found, _run_time(context), since=to_timestamp(since) if since else None
            )
            abort = context["params"].get("abort")
            if abort:
                who = context["dag_run"].triggering_user_name or "unknown"
                decision = apply.abort_decision(decision, str(abort), who)
            return decision.to_dict()

        @task(**REGISTRY)
        def apply_rollout(rollout: dict[str, Any], decision: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops.rollout import apply
            from mlops.rollout.decision import RolloutDecision

            key = run_key(context["dag"].dag_id, context["run_id"])
            found, judged = apply.Rollout.from_dict(rollout), RolloutDecision.from_dict(decision)
            result = apply.apply_rollout(use_case, found, judged, key)
            if result.action == "rejected":
                # Nobody has to act on a rollback, but somebody must hear of it.
                from mlops.orchestration.notifiers import MlopsNotifier

                MlopsNotifier.for_rollout_rejection(use_case.name, use_case.model_name, result.to_dict())(context)
            return result.to_dict()

        @task(outlets=[champion_asset(use_case)], retries=0)
        def publish_champion(result: dict[str, Any], **context: Any) -> dict[str, Any]:
            # As after a promotion: only a real move wakes the champion's consumers (model card, service).
            if result["action"] != "promoted":
                raise AirflowSkipException(f"@champion did not move: {result['action']}")
            context["outlet_events"][champion_asset(use_case)].extra = {
                "action": "rollout",
                "version": result["version"],
            }
            return result

        found = find_rollout()
        publish_champion(apply_rollout(found, judge_rollout(found)))

    return rollout()
