"""What an import did: rows written per date and rows skipped (with `--on-bad-rows skip`)."""

from __future__ import annotations

from dataclasses import dataclass, field

ON_BAD_ROWS = ("error", "skip")


@dataclass
class ImportSummary:
    out: str
    rows: int = 0
    dates: dict[str, int] = field(default_factory=dict)  # date -> rows written
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)  # e.g. "label not 0/1" -> n
    first_skipped: list[str] = field(default_factory=list)  # up to 5 "file, line N, column C: why"

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1
        if len(self.first_skipped) < 5:
            self.first_skipped.append(f"{where}: {reason}")

    def lines(self) -> list[str]:
        """Human-readable summary, one line each."""
        out = [f"wrote {self.rows} rows in {len(self.dates)} date partitions to {self.out}"]
        if self.skipped:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.skipped_by_reason.items()))
            out.append(f"skipped {self.skipped} bad rows ({reasons})")
            out += [f"  e.g. {s}" for s in self.first_skipped]
        return out
