"""The transcript cache: every reply of the llm orchestrator's model, by request.

A key is the model and everything sent (:func:`~quantorch.llm.orchestrator.transcript_cache_key`),
so a rerun of the same backtest sends nothing, pays nothing and decides the same. Entries live
in the store's ``tool_cache`` table (``tool = 'orchestrator'``, ``provider = 'llm:MODEL'``):
they are read once per run and written once per session, in one short transaction, never
across a request to the model.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

__all__ = ["TranscriptCache"]


class TranscriptCache:
    """Replies by key, read from and written to ``store`` (in memory only when None)."""

    def __init__(self, store: Any | None, model: str) -> None:
        self.store = store
        self.provider = f"llm:{model}"
        self._items: dict[str, dict] | None = None
        self._pending: dict[str, dict] = {}

    def _load(self) -> dict[str, dict]:
        if self._items is None:
            self._items = {}
            if self.store is not None and self.store.exists:
                with self.store.connect(read_only=True) as con:
                    rows = con.execute(
                        "SELECT cache_key, payload FROM tool_cache "
                        "WHERE tool = 'orchestrator' AND provider = ?", [self.provider]
                    ).fetchall()
                self._items = {k: json.loads(p) if isinstance(p, str) else p for k, p in rows}
        return self._items

    def get(self, key: str) -> dict | None:
        return self._load().get(key)

    def put(self, key: str, payload: dict) -> None:
        self._load()[key] = payload
        self._pending[key] = payload

    def flush(self) -> int:
        """Write the entries added since the last flush; returns how many."""
        if not self._pending or self.store is None:
            self._pending.clear()
            return 0
        import pandas as pd

        from quantorch.store import repository

        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        frame = pd.DataFrame([
            {"cache_key": k, "tool": "orchestrator", "provider": self.provider,
             "payload": json.dumps(v), "created_at": now}
            for k, v in self._pending.items()
        ])
        with self.store.transaction() as con:
            repository.put_tool_cache(con, frame, replace=True)
        written = len(self._pending)
        self._pending.clear()
        return written
