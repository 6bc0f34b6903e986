"""The HTML report: self-contained, complete, written atomically."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from quantorch.strategies import get_strategy

from quantorch.backtest.engine import Costs, simulate
from quantorch.backtest.metrics import performance_metrics
from quantorch.backtest.report import CHART_IDS, MAX_TRADE_ROWS, write_report
from quantorch.data.panel import PricePanel


@pytest.fixture(scope="module")
def run(sample_panel: PricePanel):
    cut = slice(pd.Timestamp("2019-01-02"), None)
    panel = PricePanel(
        *(getattr(sample_panel, f).loc[cut] for f in ("close", "open", "high", "low", "volume"))
    )
    strategy = get_strategy("sma-cross", {"fast": 10, "slow": 40})
    # Daily decisions: well over MAX_TRADE_ROWS fills.
    result = simulate(panel, strategy.target_weights(sample_panel, panel.dates), Costs(1, 5), 1e6)
    benchmark = panel.close.mean(axis=1)
    benchmark = benchmark / benchmark.iloc[0] * 1e6
    return result, benchmark


def _write(tmp_path, result, benchmark, **overrides):
    kwargs = {
        "title": "quantorch backtest bt-test: sma-cross",
        "equity": result.equity,
        "benchmark_equity": benchmark,
        "metrics": performance_metrics(result.equity, result.fills, result.gross_exposure),
        "benchmark_metrics": performance_metrics(benchmark) if benchmark is not None else None,
        "fills": result.fills,
        "meta": {"run id": "bt-test", "strategy": "sma-cross", "universe": "<AAPL & co>"},
    }
    kwargs.update(overrides)
    return write_report(tmp_path / "reports" / "bt-test.html", **kwargs)


def test_report_is_self_contained_and_complete(tmp_path, run):
    result, benchmark = run
    path = _write(tmp_path, result, benchmark)
    assert path.exists() and path.parent.name == "reports"
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=[\"']?https?:", text, flags=re.IGNORECASE)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", text, flags=re.IGNORECASE)
    assert text.count("* plotly.js v") == 1  # the library is inlined once for the page
    for chart in CHART_IDS:
        assert f'id="{chart}"' in text
    assert "Sharpe ratio" in text and "Benchmark" in text and "Fees paid" in text
    assert "&lt;AAPL &amp; co&gt;" in text  # meta is escaped
    left_out = len(result.fills) - MAX_TRADE_ROWS
    assert left_out > 0 and f"{left_out:,} older fills left out" in text
    assert text.count('<tr><td class="key">20') >= MAX_TRADE_ROWS  # trade rows, by date
    assert len(text) < 8_000_000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_report_without_benchmark_and_with_missing_metrics(tmp_path, run):
    result, _ = run
    metrics = dict.fromkeys(performance_metrics(result.equity), None)
    path = _write(
        tmp_path, result, None, benchmark_metrics=None, metrics=metrics, fills=result.fills.iloc[:0]
    )
    text = path.read_text(encoding="utf-8")
    assert "n/a" in text and "No fills." in text and "<th>Benchmark</th>" not in text
