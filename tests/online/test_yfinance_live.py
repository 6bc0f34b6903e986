"""Live Yahoo Finance: skipped offline. The same code is tested offline in
tests/integration/test_data.py with a fake download function."""

import datetime as dt

import pytest

from quantorch.data.service import ensure_prices, load_panel
from quantorch.store import Store

pytestmark = pytest.mark.online


def test_live_fetch_is_real_and_incremental(tmp_path, yahoo_online):
    pytest.importorskip("yfinance")
    store = Store(tmp_path / "q.duckdb")
    first = ensure_prices(store, "yfinance", ["AAPL", "MSFT"], dt.date(2023, 1, 3), dt.date(2023, 3, 31))
    assert first.rows_written > 100
    assert ensure_prices(store, "yfinance", ["AAPL", "MSFT"], dt.date(2023, 1, 3), dt.date(2023, 3, 31)).cached
    panel = load_panel(store, "yfinance", ["AAPL"], dt.date(2023, 1, 3), dt.date(2023, 3, 31))
    assert panel.has_opens()["AAPL"] and panel.close["AAPL"].notna().all()
