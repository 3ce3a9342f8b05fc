"""Progress on the terminal (tqdm): shown only when stderr is a terminal and --quiet is not given,
so logs, pipes and CI stay clean."""

from __future__ import annotations

import sys

from tqdm import tqdm

from app.fooling.base import SUCCESS, Snapshot


def wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class StepProgress:
    """A bar over a method's steps, with evaluations and the targets' confidence beside it."""

    def __init__(self, enabled: bool, total: int | None, desc: str) -> None:
        self.bar = tqdm(total=total, desc=desc, unit="step", disable=not enabled, file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.25, leave=True)

    def update(self, snap: Snapshot) -> None:
        if self.bar.disable:
            return
        c = snap.confidence
        done = int((c >= SUCCESS).sum())
        self.bar.set_postfix_str(f"evals {snap.evaluations:,} | min {float(c.min()):.2%} | "
                                 f"mean {float(c.mean()):.2%} | {done}/{len(c)} at 99.99%", refresh=False)
        self.bar.update(snap.step - self.bar.n)  # tqdm redraws at most every mininterval

    def close(self) -> None:
        self.bar.refresh()  # the last snapshot may have come within mininterval of the one drawn
        self.bar.close()
