"""The human approval step of a promotion, wired between a passed gate and the alias move.

`wire_approval` adds it to a training DAG whose use case requires approval. The step is
Airflow's ApprovalOperator, keeping its whole answer. On "Reject" (a person's, or the
default "Reject" Airflow applies on time-out) the ApprovalOperator does not raise (unless
`fail_on_reject`, which we leave off): it skips its direct downstream task
`promote_candidate` (SkipMixin), so `@champion` stays, and returns the answer like any
return value. That return value (chosen options, who, when) does not say whether the
time-out answered, so this operator also pushes the answer with `timed_out` under
ANSWER_KEY; `record_approval_outcome` reads it to record on the model version who
rejected, or that nobody answered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import task
from airflow.sdk.exceptions import AirflowSkipException

from mlops.config import UseCase
from mlops.naming import run_key
from mlops.orchestration.defaults import GATE, REGISTRY

ANSWER_KEY = "answer"


class PromotionApprovalOperator(ApprovalOperator):
    """ApprovalOperator whose answer (options, who, when, timed out) is in XCom whatever it was."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            responded_at = event.get("responded_at")
            answer = {
                "chosen_options": list(event.get("chosen_options") or []),
                "responded_by_user": event.get("responded_by_user"),
                "responded_at": responded_at.isoformat() if isinstance(responded_at, datetime) else responded_at,
                "timed_out": bool(event.get("timedout", False)),
            }
            context["ti"].xcom_push(key=ANSWER_KEY, value=answer)
        return super().execute_complete(context=context, event=event)


APPROVAL_BODY = """
**{{ params_model }}** candidate `{{ ti.xcom_pull(task_ids='evaluate_candidate')['candidate']['key'] }}`
passed the automatic gate against champion
v{{ ti.xcom_pull(task_ids='evaluate_candidate')['decision']['champion_version'] or '(none yet)' }}.

Checks:
{% for check in ti.xcom_pull(task_ids='evaluate_candidate')['decision']['checks'] %}
- {{ check }}
{% endfor %}

Candidate metrics: `{{ ti.xcom_pull(task_ids='evaluate_candidate')['decision']['candidate_metrics'] }}`

Champion metrics: `{{ ti.xcom_pull(task_ids='evaluate_candidate')['decision']['champion_metrics'] }}`

MLflow run: `{{ ti.xcom_pull(task_ids='evaluate_candidate')['candidate']['run_id'] }}`
"""


def wire_approval(use_case: UseCase, evaluation: Any, version: Any, promotion: Any) -> None:
    """Insert a person between a passed gate and the alias move.

    A failed gate needs nobody: the branch sends it straight to `promote_candidate`
    (which marks it `@challenger`). On a rejection or a time-out the approval operator
    skips `promote_candidate`; `record_approval_outcome` then keeps the champion and
    records the answer on the model version.
    """
    # The branch may only skip this, never `promote_candidate` itself, which both paths reach.
    no_approval_needed = EmptyOperator(task_id="no_approval_needed")
    approve_promotion = _approve_promotion(use_case)
    route = _route_for_approval(evaluation)
    version >> route >> [approve_promotion, no_approval_needed] >> promotion
    [evaluation, version, promotion] >> _record_approval_outcome(use_case)


def _route_for_approval(evaluation: Any) -> Any:
    @task.branch(**GATE)
    def route_for_approval(evaluation: dict[str, Any]) -> str:
        return "approve_promotion" if evaluation["decision"]["passed"] else "no_approval_needed"

    return route_for_approval(evaluation)


def _approve_promotion(use_case: UseCase) -> PromotionApprovalOperator:
    return PromotionApprovalOperator(
        task_id="approve_promotion",
        subject=f"Promote {use_case.model_name} to @champion?",
        body=APPROVAL_BODY.replace("{{ params_model }}", use_case.model_name),
        # Silence is not consent: on time-out the default "Reject" is taken.
        defaults="Reject",
        response_timeout=timedelta(hours=use_case.approval.timeout_hours),
        retries=0,
    )


def _record_approval_outcome(use_case: UseCase) -> Any:
    """The person's answer (or the time-out) on the model version; a rejection keeps the champion."""

    # all_done: a rejection skips promote_candidate, and the answer must still be recorded.
    # The inputs are pulled here rather than passed in, so that after a failure upstream
    # this task skips instead of failing a second time on the missing XCom.
    @task(**REGISTRY, trigger_rule="all_done")
    def record_approval_outcome(**context: Any) -> dict[str, Any]:
        return _record_answer(use_case, context["ti"], run_key(context["dag"].dag_id, context["run_id"]))

    return record_approval_outcome()


def _record_answer(use_case: UseCase, ti: Any, key: str) -> dict[str, Any]:
    """What `record_approval_outcome` records, read from the XComs of the tasks before it."""
    from mlops.promotion import approval

    evaluation = ti.xcom_pull(task_ids="evaluate_candidate")
    version = ti.xcom_pull(task_ids="register_candidate")
    if evaluation is None or version is None:
        raise AirflowSkipException(
            "nothing to record: evaluate_candidate or register_candidate did not finish; "
            "the failed task upstream says why"
        )
    if not evaluation["decision"]["passed"]:
        return {"action": "none", "approval": "not asked: the gate rejected the candidate"}
    answer = ti.xcom_pull(task_ids="approve_promotion", key=ANSWER_KEY)
    outcome = approval.approval_outcome(answer, use_case.approval.timeout_hours)
    if outcome.decision == "not answered":
        raise AirflowSkipException(
            "approve_promotion ended without an answer (see its log): nothing recorded and "
            "@champion unchanged; clear approve_promotion to ask again"
        )
    result = approval.apply_approval(use_case, version, evaluation["decision"], outcome, key)
    note = outcome.reason
    if outcome.approved and ti.xcom_pull(task_ids="promote_candidate") is None:
        note += "; promote_candidate did not finish, so @champion did not move: clear it to promote"
    return {**result.to_dict(), "approval": note}
