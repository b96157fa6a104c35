"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

import difflib


class PlannerError(Exception):
    """A problem with the user's input or data, explained in one line."""


def did_you_mean(name: str, candidates: list[str], what: str) -> PlannerError:
    """An 'unknown X' error with close matches as suggestions."""
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=4, cutoff=0.5)
    by_lower = {c.lower(): c for c in candidates}
    # Also suggest ids that contain the name (e.g. "3090" -> rtx3090, rtx3090ti).
    contains = [c for c in candidates if name.lower() in c.lower() and c.lower() not in close]
    picks = [by_lower[c] for c in close] + contains[: max(0, 4 - len(close))]
    hint = f"; did you mean {', '.join(picks)}?" if picks else ""
    return PlannerError(f"unknown {what} {name!r}{hint} ({LISTINGS.get(what, f'see `planner {what}s`')})")


LISTINGS = {  # where each kind of name is listed
    "kv type": "see `planner quants`", "quant": "see `planner quants`", "speculative method": "see `planner drafts`",
    "calibration": "see hwdb/calibrations/",
    "id": "see `planner gpus`, `planner models`, `planner engines` or `planner hosts`"}
