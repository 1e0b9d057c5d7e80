"""Rejecting candidates over `budget.max_flops` before they cost anything, the one loop: the
run's driver screens trials with it, one-shot and proxy searchers their sub-architectures."""

from __future__ import annotations

from rankitect.errors import ConfigError

MAX_REJECTED_IN_A_ROW = 500


class FlopsScreen:
    """Admits candidates of at most `max_flops` FLOPs per example (all when None); ConfigError
    once `MAX_REJECTED_IN_A_ROW` candidates in a row were over it (the space rarely fits it)."""

    def __init__(self, max_flops: int | None) -> None:
        self.max_flops = max_flops
        self.rejected_in_a_row = 0

    def admits(self, flops: int) -> bool:
        if self.max_flops is None or flops <= self.max_flops:
            self.rejected_in_a_row = 0
            return True
        self.rejected_in_a_row += 1
        if self.rejected_in_a_row > MAX_REJECTED_IN_A_ROW:
            raise ConfigError(f"budget.max_flops: {MAX_REJECTED_IN_A_ROW} candidates in a row were over "
                              f"{self.max_flops:,} FLOPs per example; the space rarely fits it (last: {flops:,})")
        return False

    def reason(self, flops: int) -> str:
        """Why a candidate of `flops` was rejected."""
        return f"rejected before training: {flops:,} FLOPs per example > budget.max_flops {self.max_flops:,}"
