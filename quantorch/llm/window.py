"""The training-window guard: a backtest of an LLM over a period its training data covers is not
out of sample. The model may have read how those prices moved (FINSABER, arXiv 2505.07078, saw
LLM-trader edges vanish out of sample; TradingAgents users found the same, issue #805), so every
table, JSON and report of such a run says so.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["training_window"]


def training_window(
    model: str, cutoff: dt.date | None, start: dt.date, end: dt.date
) -> dict | None:
    """The flag for a run of ``model`` from ``start`` to ``end`` (None when the run starts after
    the model's training-data ``cutoff``, or no cutoff is configured)."""
    if cutoff is None or start > cutoff:
        return None
    overlap_end = min(end, cutoff)
    share = ((overlap_end - start).days + 1) / max(1, (end - start).days + 1)
    return {
        "model": model,
        "training_cutoff": cutoff.isoformat(),
        "overlap": {"start": start.isoformat(), "end": overlap_end.isoformat()},
        "overlap_share": round(share, 4),
        "message": (
            f"the model may have seen this period: {model}'s training data runs to {cutoff}, "
            f"and {start} to {overlap_end} ({share:.0%} of the run) lies before that, so those "
            "results are not out of sample; test after the cutoff (llm.training_cutoff)"
        ),
    }
