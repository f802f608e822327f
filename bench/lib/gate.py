"""bench.report's regression gate: why a run fails ``--fail-below`` (a fast path slower than its
reference) or ``--max-drop`` (a speedup fell against a baseline run)."""
from __future__ import annotations

from bench.lib.results import cases, pair


def failures(result: dict, fail_below: float | None = None, baseline: dict | None = None,
             max_drop: float | None = None, stat: str = "min") -> list[str]:
    """Human-readable reasons the run fails the thresholds (empty = pass)."""
    rows = pair(cases(result, stat))
    bad = []
    if fail_below is not None:
        for r in rows:
            if r.ref is r.fast or r.same_path:
                continue
            if r.speedup is None:
                bad.append(f"{r.stage}:{r.size} [{r.backend}] has no timing to compare (did it run?)")
            elif r.speedup < fail_below:
                bad.append(f"{r.stage}:{r.size} {r.device} {r.dtype} [{r.backend}]: speedup "
                           f"{r.speedup:.2f}x < {fail_below:.2f}x")
    if baseline is not None and max_drop is not None:
        old = {(r.stage, r.size, r.device, r.dtype, r.backend): r.speedup for r in pair(cases(baseline, stat))}
        for r in rows:
            o = old.get((r.stage, r.size, r.device, r.dtype, r.backend))
            if o and r.speedup and r.speedup < o * (1 - max_drop):
                bad.append(f"{r.stage}:{r.size} {r.device} {r.dtype} [{r.backend}]: speedup {r.speedup:.2f}x "
                           f"fell more than {100 * max_drop:.0f}% from baseline {o:.2f}x")
    return bad
