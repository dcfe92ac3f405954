"""The human approval step of a promotion: Airflow's ApprovalOperator, keeping its whole answer.

On "Reject" (a person's, or the default "Reject" Airflow applies on time-out) the
ApprovalOperator does not raise (unless `fail_on_reject`, which we leave off): it skips
its direct downstream task `promote_candidate` (SkipMixin), so `@champion` stays, and
returns the answer like any return value. That return value (chosen options, who, when)
does not say whether the time-out answered, so this operator also pushes the answer
with `timed_out` under ANSWER_KEY; `record_approval_outcome` reads it to record on the
model version who rejected, or that nobody answered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

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
