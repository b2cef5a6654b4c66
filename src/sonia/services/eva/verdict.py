"""What EVA's policy says about one proposed action: the verdict, before anything is stored.

Its own module because both the decision store (`decisions`) and the taint rule
(`origins.escalate`) take and give verdicts, and neither should import the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sonia.actions.commands import CommandPlan
from sonia.errors import PolicyDenied

__all__ = ["Decision", "Verdict"]

Decision = Literal["allow", "approval_required", "deny"]


@dataclass(frozen=True)
class Verdict:
    """What the policy says about one proposed action."""

    tool: str
    args: dict[str, Any]
    tier: int
    plan_hash: str
    decision: Decision
    reason: str
    command: CommandPlan | None = None

    def denial(self) -> PolicyDenied:
        """The error to raise for a `deny` verdict (403 POLICY_DENIED)."""
        return PolicyDenied(self.reason)
