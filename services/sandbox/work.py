"""People acting on what b24-nps created: the leads it made (``ORIGINATOR_ID`` ``b24-nps``) taken
in work or closed, its tasks (an ``XML_ID`` set) started or completed, as a manager does in the
portal (``POST /sandbox/handle``), so that the follow-up has something to see."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.sandbox.crm import Crm
from services.sandbox.methods import LEAD

HANDLED_BY = "sandbox.handle"
ORIGINATOR = "b24-nps"
Step = Literal["in_work", "closed", "junk", "declined"]
LEAD_STATUS: dict[Step, str] = {
    "in_work": "IN_PROCESS",
    "closed": "CONVERTED",
    "junk": "JUNK",
    "declined": "JUNK",
}
TASK_STATUS: dict[Step, int] = {"in_work": 3, "closed": 5, "junk": 7, "declined": 7}
FINAL_LEAD = frozenset({"CONVERTED", "JUNK"})
FINAL_TASK = frozenset({4, 5, 7})


class WorkError(ValueError):
    """An id that names no lead or task of the portal."""


@dataclass
class Handled:
    leads: list[int] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)


def handle(
    crm: Crm,
    *,
    leads: int = 0,
    tasks: int = 0,
    lead_ids: Sequence[int] = (),
    task_ids: Sequence[int] = (),
    to: Step = "closed",
) -> Handled:
    """Move the given leads and tasks (else the ``leads`` oldest b24-nps leads and the ``tasks``
    oldest b24-nps tasks not final yet) to ``to``: a lead to ``IN_PROCESS``, ``CONVERTED`` or
    ``JUNK``, a task to status 3, 5 or 7, as a person's edit (the time is the portal's clock)."""
    records = crm.records(LEAD)
    missing = [i for i in lead_ids if i not in records]
    missing_tasks = [i for i in task_ids if i not in crm.state.tasks]
    problems = [f"lead {i}" for i in missing] + [f"task {i}" for i in missing_tasks]
    if problems:
        raise WorkError(f"the portal has no {', '.join(problems)}")
    chosen_leads = (
        list(lead_ids)
        or sorted(
            lead_id
            for lead_id, lead in records.items()
            if lead.get("ORIGINATOR_ID") == ORIGINATOR and lead.get("STATUS_ID") not in FINAL_LEAD
        )[:leads]
    )
    chosen_tasks = (
        list(task_ids)
        or sorted(
            task_id
            for task_id, task in crm.state.tasks.items()
            if task.get("XML_ID") and task.get("STATUS") not in FINAL_TASK
        )[:tasks]
    )
    for lead_id in chosen_leads:
        crm.update(LEAD, lead_id, {"STATUS_ID": LEAD_STATUS[to]}, method=HANDLED_BY)
    for task_id in chosen_tasks:
        crm.update_task(task_id, {"STATUS": TASK_STATUS[to]})
    return Handled(leads=chosen_leads, tasks=chosen_tasks)
