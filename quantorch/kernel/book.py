"""The book as it really stands at a session's close: a frozen value derived from fills.

A backtest walks it session by session; a paper cycle rebuilds it from the broker's positions
and cash. Either way the next :class:`BookState` comes from the fills of the orders the last
decision sent (:meth:`BookState.after`) and the marks of the session's closes
(:meth:`BookState.marked`): there is no separate close-to-close model, so the previous
positions, the turnover cap and the drawdown kill switch of the next decision all see the book
the trader really holds, costs included.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

__all__ = ["BookState", "session_marks"]


def session_marks(closes: np.ndarray, references: np.ndarray) -> np.ndarray:
    """What a session values positions at: its close, else its reference (fill) price."""
    closes = np.asarray(closes, dtype=np.float64)
    return np.where(np.isfinite(closes), closes, np.asarray(references, dtype=np.float64))


def _frozen(values: np.ndarray) -> np.ndarray:
    array = np.array(values, dtype=np.float64, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class BookState:
    """Shares, cash and marks of one book, with the risk state its RiskGuard carries.

    Attributes
    ----------
    tickers
        The tickers the book may hold, in a fixed order (every array follows it).
    shares
        Signed shares held per ticker.
    cash
        Cash (USD).
    marks
        The price each position is valued at: the last close, else the last fill price; NaN
        for a ticker never priced (a position there is worth nothing until it is).
    session
        The close the book is marked at (None for an opening book).
    peak_equity
        The highest equity of the book at any close so far (the drawdown kill switch's
        reference; reset when the switch re-arms).
    cooldown_until
        Set when the kill switch fired: the book stays flat until this session, then the
        switch re-arms from the equity it has then.
    """

    tickers: tuple[str, ...]
    shares: np.ndarray
    cash: float
    marks: np.ndarray
    session: pd.Timestamp | None = None
    peak_equity: float = field(default=float("nan"))
    cooldown_until: pd.Timestamp | None = None

    def __post_init__(self) -> None:
        n = len(self.tickers)
        object.__setattr__(self, "shares", _frozen(self.shares))
        object.__setattr__(self, "marks", _frozen(self.marks))
        if self.shares.shape != (n,) or self.marks.shape != (n,):
            raise ValueError(f"shares and marks must have one value per ticker ({n})")
        if not np.isfinite(self.cash):
            raise ValueError(f"cash must be a finite number, got {self.cash!r}")
        if not np.isfinite(self.peak_equity):
            object.__setattr__(self, "peak_equity", self.equity)

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def opening(cls, tickers: list[str] | tuple[str, ...], cash: float) -> BookState:
        """An all-cash book before its first session."""
        n = len(tickers)
        return cls(tuple(tickers), np.zeros(n), float(cash), np.full(n, np.nan))

    # ---- what it is worth --------------------------------------------------------------------

    @property
    def position_values(self) -> np.ndarray:
        """Shares x marks per ticker (0 where nothing is held or nothing is known)."""
        value = self.shares * self.marks
        return np.where(self.shares != 0, np.nan_to_num(value, nan=0.0), 0.0)

    @property
    def equity(self) -> float:
        return float(self.cash + self.position_values.sum())

    @property
    def weights(self) -> np.ndarray:
        """Position value over equity per ticker (signed)."""
        equity = self.equity
        if not equity > 0:
            return np.zeros(len(self.tickers))
        return self.position_values / equity

    @property
    def gross_exposure(self) -> float:
        return float(np.abs(self.weights).sum())

    @property
    def drawdown(self) -> float:
        """Equity over its peak, minus one (<= 0)."""
        if not self.peak_equity > 0:
            return 0.0
        return min(0.0, self.equity / self.peak_equity - 1.0)

    def weight_of(self, ticker: str) -> float:
        return float(self.weights[self.tickers.index(ticker)])

    # ---- what happens to it ------------------------------------------------------------------

    def marked(self, session: pd.Timestamp, prices: np.ndarray) -> BookState:
        """The book at ``session``'s close, valued at ``prices`` where they are finite (the
        close, else that session's reference price: see ``session_marks``), the last mark
        elsewhere; the peak moves up with it."""
        prices = np.asarray(prices, dtype=np.float64)
        marks = np.where(np.isfinite(prices), prices, self.marks)
        book = replace(self, marks=marks, session=pd.Timestamp(session))
        return replace(book, peak_equity=max(self.peak_equity, book.equity))

    def after(self, shares: np.ndarray, cash: float) -> BookState:
        """The book after an execution (the fills' new shares and cash), marks unchanged."""
        return replace(self, shares=shares, cash=float(cash))

    def with_risk(self, *, peak_equity: float, cooldown_until: pd.Timestamp | None) -> BookState:
        """The same holdings with the RiskGuard state a decision step returned."""
        return replace(self, peak_equity=peak_equity, cooldown_until=cooldown_until)
