"""Rejecting candidates over `budget.max_flops` or `budget.max_params` before they cost
anything, the one loop: the run's driver screens trials with it, one-shot and proxy searchers
their sub-architectures."""

from __future__ import annotations

from rankitect.cost import Cost
from rankitect.errors import ConfigError

MAX_REJECTED_IN_A_ROW = 500


class CostScreen:
    """Admits candidates of at most `max_flops` FLOPs per example and `max_params` parameters
    (embedding tables included; None: no limit); ConfigError naming the limit once
    `MAX_REJECTED_IN_A_ROW` candidates in a row were over it (the space rarely fits it)."""

    def __init__(self, max_flops: int | None, max_params: int | None = None) -> None:
        self.max_flops, self.max_params = max_flops, max_params
        self.rejected_in_a_row = 0

    def over(self, cost: Cost) -> list[str]:
        """The limits `cost` breaks, as "budget.max_flops" / "budget.max_params" messages."""
        out = []
        if self.max_flops is not None and cost.flops > self.max_flops:
            out.append(f"{cost.flops:,} FLOPs per example > budget.max_flops {self.max_flops:,}")
        if self.max_params is not None and cost.params > self.max_params:
            out.append(f"{cost.params:,} parameters > budget.max_params {self.max_params:,}")
        return out

    def admits(self, cost: Cost) -> bool:
        broken = self.over(cost)
        if not broken:
            self.rejected_in_a_row = 0
            return True
        self.rejected_in_a_row += 1
        if self.rejected_in_a_row > MAX_REJECTED_IN_A_ROW:
            limit = "budget.max_params" if "max_params" in broken[-1] else "budget.max_flops"
            raise ConfigError(f"{limit}: {MAX_REJECTED_IN_A_ROW} candidates in a row were over it; the space "
                              f"rarely fits it (last: {'; '.join(broken)})")
        return False

    def reason(self, cost: Cost) -> str:
        """Why a candidate of `cost` was rejected."""
        return "rejected before training: " + "; ".join(self.over(cost))
