"""The pass/fail tally the deploy scripts' checks share (scripts/deploy-rehearsal.py and
scripts/check-deploy-template.py): every check counted, every failure printed as it happens and
kept for the summary. Standard library only (both venvs import it)."""

from __future__ import annotations


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.checks = 0

    def check(self, ok: bool, what: str) -> bool:
        self.checks += 1
        if not ok:
            self.items.append(what)
            print(f"FAIL: {what}")
        return ok

    def summary(self, what: str, elapsed: float) -> int:
        """Prints the one-line result of `what` and returns the exit status."""
        if self.items:
            print(f"{what}: {len(self.items)} of {self.checks} checks FAILED ({elapsed:.1f} s)")
            return 1
        print(f"{what}: {self.checks} passed, 0 failed ({elapsed:.1f} s)")
        return 0
