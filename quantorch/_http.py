"""Small HTTP helpers shared by the adapters that talk to remote APIs (the LLM client, the
Alpaca broker)."""

from __future__ import annotations

import datetime as dt
import email.utils

__all__ = ["retry_after_seconds"]


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number or an HTTP date); None when it
    says nothing usable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
