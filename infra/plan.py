"""What provisioning found and did, as plain data: the CLI prints it, the tests assert on it.

Every resource check returns a :class:`Step` — the resource, its name, what has to happen to it
(``none``, ``create``, ``update``; ``delete`` when ``down`` removed it) and the
:class:`Difference` entries that made the check say so — paired with the :data:`Fix` that makes
it right, or None. ``status`` returns the steps as a :class:`Plan`, ``up`` the plan it applied
as an :class:`UpReport`, ``down`` the steps it removed as a :class:`DownReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Action = Literal["none", "create", "update", "delete"]
Resource = Literal["bucket", "dlq", "queue", "notification", "cors", "encryption", "lifecycle"]
State = Literal["present", "missing", "different", "removed"]
Fix = Callable[[], None]

_STATES: dict[Action, State] = {
    "none": "present", "create": "missing", "update": "different", "delete": "removed",
}


@dataclass(frozen=True)
class Difference:
    field: str
    current: Any
    desired: Any


@dataclass(frozen=True)
class Step:
    """One resource: what has to happen to it (``none`` when it is as desired)."""

    resource: Resource
    name: str
    action: Action
    differences: tuple[Difference, ...] = ()

    @property
    def state(self) -> State:
        return _STATES[self.action]


@dataclass(frozen=True)
class Plan:
    """What exists compared with what is desired, one step per resource."""

    steps: tuple[Step, ...]

    @property
    def changes(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.action != "none")

    @property
    def up_to_date(self) -> bool:
        return not self.changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "up_to_date": self.up_to_date,
            "steps": [{**asdict(step), "state": step.state} for step in self.steps],
        }


@dataclass(frozen=True)
class UpReport:
    """The plan ``up`` found (each step checked just before it was applied)."""

    plan: Plan

    @property
    def changed(self) -> bool:
        return not self.plan.up_to_date

    def to_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, **self.plan.to_dict()}


@dataclass(frozen=True)
class DownReport:
    removed: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return bool(self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "removed": [asdict(step) for step in self.removed]}
