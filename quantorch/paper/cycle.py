"""One paper-trading cycle after a session's close, through the decision kernel, crash-safe.

A cycle of (account, profile, session) runs these steps, and records each in ``cycles`` (with
what it wrote, in one transaction) before the next starts, so a restart knows exactly where it
stopped and resumes there:

========================  ======================================================================
status after the step     what the step did
========================  ======================================================================
``started``               the cycle exists (a new account is opened first: cash, profile hash)
``data_ready``            prices up to the session are in the store (only what was missing)
``fills_recorded``        the broker settled the orders the last decision sent: fills stored once
``reconciled``            the broker's shares and cash equal the ledger's (else: halt, stop)
``decided``               (decision sessions) ``decision_step`` on the book as it stands: decisions,
                          real tool calls, the RiskGuard's state and the orders as intents
``orders_submitted``      every intent sent to the broker under its client order id, acks stored
``done``                  the session's positions and equity stored
========================  ======================================================================

Running a done cycle again does nothing. An intent is stored before it is sent and sent by its
deterministic client order id (account, session, ticker), and brokers refuse a client id they
already have, so no order is ever sent twice; fills are keyed by the broker's fill id, so none is
stored twice. Sessions between the last cycle and this one (the trader was down) get a catch-up
cycle each that settles and records but decides nothing, marked ``missed``.

A paper account decides exactly as a backtest from its first session would: every cycle reads
prices from the account's fixed ``history_start`` (the backtest's warm-up before the first
session), the decision sessions are the first session and each period end of ``rebalance``, and
the book is the broker's shares and cash marked at the close. ``quantorch paper replay`` over a
period therefore reproduces ``quantorch backtest`` over it, fill for fill.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from quantorch.backtest.metrics import performance_metrics
from quantorch.brokers import Broker
from quantorch.config import ORCHESTRATOR, QuantorchConfig, load_config
from quantorch.data import calendar
from quantorch.data.panel import PricePanel
from quantorch.data.providers import get_provider
from quantorch.data.service import check_known_tickers, ensure_prices, stored_coverage
from quantorch.errors import (
    DataSourceUnavailableError,
    QuantorchError,
    RetryableError,
    UserInputError,
    did_you_mean,
)
from quantorch.kernel.book import BookState, session_marks
from quantorch.kernel.execution import Costs, orders_from_deltas, target_shares
from quantorch.orchestrator.profiles import TraderProfile
from quantorch.orchestrator.slots import WARMUP_SESSIONS
from quantorch.progress import SILENT, Progress
from quantorch.store import Store, code_version, repository
from quantorch.toolkit.spec import MarketData

__all__ = [
    "CRASH_ENV",
    "CycleOutcome",
    "PaperTrader",
    "ReconciliationError",
    "account_run_id",
    "paper_trader",
    "run_scheduled_cycle",
]

#: Tests set ``QUANTORCH_PAPER_CRASH=<status>[@N]`` to SIGKILL the process right after that step
#: (the N-th time it is reached; default the first).
CRASH_ENV = "QUANTORCH_PAPER_CRASH"
_STEPS = ("started", "data_ready", "fills_recorded", "reconciled", "decided",
          "orders_submitted", "done")  # fmt: skip
SHARE_TOLERANCE = 1e-6
#: A replay keeps the file open this long at most, then lets readers in for a moment: longer
#: than a waiting reader's retry interval (``store._RETRY_CAP_S``), so one always gets in.
_HOLD_S, _READER_GAP_S = 1.0, 0.15
#: How long a cycle waits for another process's cycle of the same account to end.
_CYCLE_LOCK_RETRY_S = 30.0
CASH_TOLERANCE = 0.01
#: Orders a broker may still fill.
_OPEN_STATUSES = ("submitted", "accepted", "partially_filled")


class ReconciliationError(UserInputError):
    """The broker's shares or cash differ from the ledger: trading stops for the account."""


@dataclass(frozen=True)
class CycleOutcome:
    """What one cycle did (``status``: done, missed, skipped, or already done)."""

    account: str
    session: dt.date
    status: str
    decided: bool = False
    orders: int = 0
    fills: int = 0
    equity: float = float("nan")
    cash: float = float("nan")
    message: str = ""
    resumed_from: str | None = None

    def to_json(self) -> dict:
        data = dict(self.__dict__)
        data["session"] = self.session.isoformat()
        for key in ("equity", "cash"):
            data[key] = None if not np.isfinite(data[key]) else data[key]
        return data


def account_run_id(account: str) -> str:
    """The run id under which a paper account's equity curve is stored."""
    return f"paper-{account}"


def _cycle_run_id(account: str, session: pd.Timestamp) -> str:
    return f"pc-{account}-{session:%Y%m%d}"


def profile_hash(profile: TraderProfile) -> str:
    blob = json.dumps(profile.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_crash_hits: dict[str, int] = {}


def _crash_point(status: str) -> None:
    """SIGKILL this process right after ``status`` was committed, when ``CRASH_ENV`` asks for
    it: ``<status>`` (the first time) or ``<status>@N`` (the N-th time in this process)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    step, _, nth = wanted.partition("@")
    if step != status:
        return
    _crash_hits[status] = _crash_hits.get(status, 0) + 1
    if _crash_hits[status] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class PaperTrader:
    """The cycles of one paper account, with what they share loaded once per process.

    Parameters
    ----------
    config
        The workspace config; ``paper.account``, ``paper.broker``, ``paper.profile`` and the
        top-level universe, source and orchestrator say what the account trades.
    store
        The database (prices, the account's orders, fills, ledger, cycles, decisions).
    broker
        The broker to use (default: built from ``paper.broker``).
    """

    config: QuantorchConfig
    store: Store
    broker: Broker | None = None
    progress: Progress = SILENT
    _setup: object | None = field(default=None, init=False)
    _profile: TraderProfile | None = field(default=None, init=False)
    _market: MarketData | None = field(default=None, init=False)
    _market_end: pd.Timestamp | None = field(default=None, init=False)
    #: A replay loads its prices once, to its last session (each cycle still sees only its own).
    _replay_end: pd.Timestamp | None = field(default=None, init=False)
    #: The account row, read once per process and kept in step with every change this process
    #: makes to it (one process trades an account: the scheduler's lock sees to it).
    _account_row: dict | None = field(default=None, init=False)
    _coverage_checked: pd.Timestamp | None = field(default=None, init=False)
    _lock: object | None = field(default=None, init=False)

    # ---- the account -----------------------------------------------------------------------

    @property
    def account(self) -> str:
        return self.config.paper.account

    @property
    def costs(self) -> Costs:
        return Costs(self.config.costs.fee_bps, self.config.costs.slippage_bps)

    @property
    def tickers(self) -> list[str]:
        return list(self.config.universe)

    @property
    def strategy(self) -> str:
        if self.config.backtest.strategy != ORCHESTRATOR:
            return self.config.backtest.strategy
        return self.config.orchestrator.name

    @property
    def profile_ref(self) -> str:
        """The profile as configured: a shipped name, or the absolute path of a YAML file."""
        ref = self.config.paper.profile or self.config.orchestrator.profile
        path = Path(ref)
        return str(path.resolve()) if path.suffix in {".yaml", ".yml"} else ref

    def profile(self) -> TraderProfile:
        if self._profile is None:  # not through the kernel's factory: no torch for a no-op
            from quantorch.orchestrator.profiles import load_profile
            from quantorch.toolkit.registry import available_tools

            self._profile = load_profile(
                self.profile_ref, known_tools=available_tools(self.config.tools.extra_dirs))
        return self._profile

    def _broker(self) -> Broker:
        if self.broker is None:
            if self.config.paper.broker == "alpaca":
                from quantorch.brokers.alpaca import AlpacaBroker

                self.broker = AlpacaBroker(self.account)
            else:
                from quantorch.brokers.simulated import SimulatedBroker

                self.broker = SimulatedBroker(self.store, self.account, self.costs)
        return self.broker

    def _account(self) -> dict:
        """The account row (opened already)."""
        if self._account_row is None:
            with self.store.connect(read_only=True) as con:
                self._account_row = repository.account(con, self.account)
        return self._account_row

    def _update_account(self, con, **changes) -> None:
        repository.update_account(con, self.account, **changes)
        if self._account_row is not None:
            self._account_row = {**self._account_row, **changes}

    def check(self) -> dict | None:
        """Everything a cycle needs that can be checked without running one: the profile
        loads, the broker is reachable in principle (its keys are set), and an existing
        account still matches the config. Returns the account row (None for a new account);
        writes nothing."""
        self.profile()
        self._broker()
        row = None
        if self.store.exists:
            with self.store.connect(read_only=True) as con:
                row = repository.account(con, self.account)
        if row is not None:
            self._check_row(row)
        return row

    def _check_row(self, row: dict) -> None:
        profile = self.profile()
        if row["profile"] != profile.name or row["profile_hash"] != profile_hash(profile):
            changed = "another profile" if row["profile"] != profile.name else "its settings"
            raise UserInputError(
                f"paper account '{self.account}' trades under profile '{row['profile']}', and "
                f"the config now gives {changed} ('{profile.name}'): a profile cannot change "
                "under a live account; restore it, or start a new account with --account NAME"
            )
        if row["broker"] != self.config.paper.broker:
            raise UserInputError(
                f"paper account '{self.account}' trades at the {row['broker']} broker, not "
                f"{self.config.paper.broker}: its ledger belongs there; use --account NAME "
                "for an account at another broker"
            )
        if list(row["universe"]) != self.tickers or row["strategy"] != self.strategy:
            raise UserInputError(
                f"paper account '{self.account}' trades {row['strategy']} on "
                f"{len(row['universe'])} tickers; the config differs: use --account NAME for "
                "a new account"
            )

    def _opened(self, session: pd.Timestamp) -> dict:
        """The account row, opened at ``session`` when new; refuses a changed profile."""
        if self._account_row is not None:
            return self._account_row
        row = self.check()
        if row is not None:
            self._account_row = row
            return row
        profile = self.profile()
        digest = profile_hash(profile)
        broker = self._broker()
        if self.config.paper.broker == "sim":
            cash = self.config.paper.initial_cash or self.config.backtest.initial_cash
        else:  # a real paper account: it must start flat, its cash is what the broker says
            if broker.shares():
                raise UserInputError(
                    f"the {broker.name} paper account already holds positions: open quantorch's "
                    "account on a flat broker account (reset it at the broker first)"
                )
            cash = broker.cash()
        history = calendar.shift_sessions(session, -WARMUP_SESSIONS)
        row = {
            "account": self.account, "profile": profile.name, "profile_ref": self.profile_ref,
            "profile_hash": digest,
            "strategy": self.strategy, "broker": self.config.paper.broker,
            "source": self.config.data.source, "universe": self.tickers,
            "benchmark": self.config.benchmark_symbol, "rebalance": self.config.backtest.rebalance,
            "initial_cash": float(cash), "first_session": session.date(),
            "history_start": history.date(), "config_hash": self.config.config_hash(),
            "peak_equity": None, "cooldown_until": None, "halted_reason": None,
        }
        with self.store.transaction() as con:
            if repository.insert_account(con, row):
                repository.insert_run(con, repository.RunRecord(
                    run_id=account_run_id(self.account), kind="paper", strategy=self.strategy,
                    source=self.config.data.source, universe=tuple(self.tickers),
                    benchmark=self.config.benchmark_symbol, start_date=session.date(),
                    end_date=session.date(), rebalance=self.config.backtest.rebalance,
                    seed=self.config.seed, config_hash=self.config.config_hash(),
                    config=self.config.model_dump_json(), code_version=code_version(),
                    metrics={},
                ))
            if self.config.paper.broker != "sim":  # the ledger starts from the broker's cash
                repository.insert_cash_entries(con, self.account, [{
                    "session": session.date(), "kind": "deposit", "amount": float(cash),
                    "entry_key": "opening-deposit", "note": f"{broker.name} cash at opening",
                }])
            row = repository.account(con, self.account)
        if self.config.paper.broker == "sim":
            broker.open(float(cash), session)
        self._account_row = row
        return row

    # ---- cycles ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self):
        """Hold the account's cycle lock (re-entrant): one process runs an account's cycles at
        a time (the scheduler, a `paper run-once`, a replay); another is refused with the
        holder's PID."""
        if self._lock is not None:
            yield
            return
        from quantorch.paper.locks import PidLock

        path = self.store.path.with_name(f".{self.store.path.name}.{self.account}.cycle.lock")
        self._lock = PidLock.acquire(path, retry_s=_CYCLE_LOCK_RETRY_S, busy=self._busy)
        try:
            yield
        finally:
            lock, self._lock = self._lock, None
            lock.release()

    def _busy(self, pid: int | None, _path: Path) -> Exception:
        return RetryableError(
            f"paper account '{self.account}' is running a cycle in another process "
            f"(PID {pid if pid else 'unknown'}): wait for it to finish (the scheduler's cycles "
            "take seconds), then run again"
        )

    def run(self, session: dt.date | pd.Timestamp) -> list[CycleOutcome]:
        """The cycle of ``session`` (with a catch-up cycle for every session missed since the
        last one). Returns what each cycle run now did."""
        with self.exclusive():
            return self._run(session)

    def _run(self, session: dt.date | pd.Timestamp) -> list[CycleOutcome]:
        session = pd.Timestamp(session).normalize()
        if session not in calendar.sessions(session, session):
            return [CycleOutcome(self.account, session.date(), "skipped",
                                 message=f"{session.date()} is not an NYSE session: no cycle")]
        if self._account_row is None and self.check() is None:
            self._source_end(session)  # a new account opens only on a session with prices
        account = self._opened(session)
        if account["halted_reason"]:
            raise ReconciliationError(
                f"paper account '{self.account}' is halted: {account['halted_reason']}; see "
                "`quantorch paper reconcile` (trading resumes once broker and ledger agree)"
            )
        first = pd.Timestamp(account["first_session"])
        with self.store.connect(read_only=True) as con:
            cycles = repository.cycles_of(con, self.account)
        finished = cycles[cycles["status"].isin(["done", "missed"])]
        last_done = pd.Timestamp(finished["session"].max()) if len(finished) else None
        if last_done is not None and session < last_done and self._replay_end is None:
            raise UserInputError(
                f"paper account '{self.account}' has run cycles up to {last_done.date()}; "
                f"{session.date()} is earlier: cycles run forward (check the clock or --asof); "
                "nothing was done"
            )
        if session < first:
            raise UserInputError(
                f"paper account '{self.account}' opened on {first.date()}; {session.date()} is "
                "before it"
            )
        start = first if last_done is None else calendar.shift_sessions(last_done, 1)
        # how far each cycle got: a failed one resumes after the last step it committed
        progress = cycles["status"].where(cycles["status"] != "failed", cycles["resume_step"])
        statuses = dict(zip(pd.to_datetime(cycles["session"]),
                            progress.astype(object).where(progress.notna(), "failed"),
                            strict=True))
        outcomes = []
        for day in calendar.sessions(min(start, session), session):
            day = pd.Timestamp(day)
            # a cycle that started is completed as it was meant to be; a session without one
            # (the trader was down) only settles and records
            ran = day == session or day in statuses
            decide = ran and self._decides(day, first, account["rebalance"])
            outcomes.append(self._cycle(day, decide=decide, missed=not ran,
                                        status=statuses.get(day)))
        return outcomes

    def replay(self, start: dt.date, end: dt.date) -> list[CycleOutcome]:
        """One cycle per session over [start, end] with a simulated clock (offline)."""
        days = calendar.sessions(start, end)
        if len(days) == 0:
            raise UserInputError(f"no NYSE session between {start} and {end}")
        self._replay_end = pd.Timestamp(days[-1])
        self.progress.phase(f"replaying {len(days)} sessions", len(days))
        outcomes = []
        with self.exclusive(), contextlib.ExitStack() as stack:
            since = None
            for day in days:
                # the file stays open over cycles for up to _HOLD_S, then is let go for a moment
                # so that a `quantorch query` or `paper status` from another process gets in
                if since is None:
                    stack.enter_context(self.store.held())
                    since = time.monotonic()
                outcomes.extend(self.run(day))
                self.progress.advance(detail=str(pd.Timestamp(day).date()))
                if time.monotonic() - since > _HOLD_S:
                    stack.close()
                    since = None
                    time.sleep(_READER_GAP_S)
        return outcomes

    @staticmethod
    def _decides(session: pd.Timestamp, first: pd.Timestamp, rebalance: str) -> bool:
        if session == first:
            return True
        ends = calendar.period_ends(calendar.sessions(session - pd.Timedelta(days=40),
                                                      session + pd.Timedelta(days=40)), rebalance)
        return session in ends

    def _cycle(self, session: pd.Timestamp, *, decide: bool, missed: bool,
               status: str | None) -> CycleOutcome:
        profile = self.profile()
        run_id = _cycle_run_id(self.account, session)
        broker = self._broker()
        if status in ("done", "missed"):
            return CycleOutcome(self.account, session.date(), "already done",
                                message=f"the {session.date()} cycle ran already ({status})")
        resumed = status if status not in (None, "failed") else None
        done_steps = _STEPS.index(status) if status in _STEPS else -1

        def reached(step: str) -> bool:
            return done_steps >= _STEPS.index(step)

        def mark(step: str, con, message: str | None = None) -> None:
            repository.upsert_cycle(con, self.account, profile.name, session, step,
                                    run_id=run_id, broker=broker.name, message=message)

        try:
            if not reached("data_ready"):  # a crash before this first record redoes nothing
                self._refresh(session)  # may go to the network: the file is not held
                with self.store.transaction() as con:
                    mark("data_ready", con)
                _crash_point("data_ready")
            with self._hold(broker):
                market, panel = self._data(session)
                index = panel.dates.get_indexer([session])[0]
                close = panel.close.to_numpy(dtype=np.float64)[index]
                marks = _marks_at(panel, index)
                n_fills = 0
                if not reached("reconciled"):
                    n_fills = self._settle(session, panel, index, marks, run_id, broker, mark)
                book = self._book(session, marks)
            n_orders = 0
            if decide and not reached("decided"):  # tools may call out: the file is not held
                n_orders = self._decide(book, session, panel, market, close, run_id, profile,
                                        mark)
                _crash_point("decided")
            with self._hold(broker):
                if decide and not reached("orders_submitted"):
                    self._submit(session, run_id, broker, mark)
                    _crash_point("orders_submitted")
                    book = self._book(session, marks)
                final = "missed" if missed else "done"
                self._finish(session, book, marks, final, mark, decided=decide)
            _crash_point(final)
        except ReconciliationError:
            raise
        except QuantorchError as exc:
            retry = isinstance(exc, RetryableError)
            with self.store.transaction() as con:
                mark("failed", con, message=f"will retry: {exc}" if retry else str(exc))
            raise
        return CycleOutcome(
            self.account, session.date(), final, decided=decide, orders=n_orders, fills=n_fills,
            equity=book.equity, cash=book.cash,
            message="caught up: settled, no decision" if missed else "",
            resumed_from=resumed,
        )

    # ---- the steps -------------------------------------------------------------------------

    def _hold(self, broker: Broker):
        """Keep the file open over a run of store-only steps (a simulated broker's); a real
        broker's calls go over the network, and the file is never held across those."""
        return self.store.held() if _keeps_ledger(broker) else contextlib.nullcontext()

    def _settle(self, session, panel, index, marks, run_id, broker, mark) -> int:
        """The broker settles the last decision's orders; their fills are stored once and the
        broker's shares and cash checked against the ledger (a difference halts the account)."""
        close = panel.close.to_numpy(dtype=np.float64)[index]
        opens = panel.open.to_numpy(dtype=np.float64)[index]
        reference = np.where(np.isnan(opens), close, opens)
        fills = broker.settle(session, self.tickers, reference, marks, run_id=run_id)
        _crash_point("fills_recorded")  # a broker settled: the restart finds its fills
        held = cash = None
        acks = []
        if not _keeps_ledger(broker):  # a real broker: what became of the open orders
            with self.store.connect(read_only=True) as con:
                open_orders = repository.orders_for(con, self.account, status=_OPEN_STATUSES)
            decided = pd.to_datetime(open_orders["decision_session"]) < session
            acks = [broker.order(i) for i in open_orders.loc[decided, "client_order_id"]]
            held, cash = broker.shares(), broker.cash()
        with self.store.transaction() as con:
            repository.insert_broker_fills(con, self.account, fills, run_id=run_id)
            for ack in acks:
                if ack is not None:
                    repository.update_order(con, ack.client_order_id, status=ack.status,
                                            broker_order_id=ack.broker_order_id,
                                            reason=ack.reason)
            mark("fills_recorded", con)
            diffs = [] if held is None else reconciliation(
                repository.shares_held(con, self.account),
                broker_cash_expected(con, self.account, broker), held, cash)
            if diffs:
                reason = "broker and ledger differ: " + "; ".join(diffs[:5]) + (
                    f" and {len(diffs) - 5} more" if len(diffs) > 5 else "")
                self._update_account(con, halted_reason=reason)
                mark("failed", con, message=reason)
            else:
                mark("reconciled", con)
        if diffs:
            self._account_row = None
            raise ReconciliationError(
                f"paper account '{self.account}': {reason}; trading stops for the account "
                "(see `quantorch paper reconcile`)")
        _crash_point("reconciled")
        return len(fills)

    def _source_end(self, session: pd.Timestamp):
        """The provider and the last date it has, after checking it knows the tickers and has
        ``session`` (a source behind the session is a temporary fault: retried next time)."""
        source = self.config.data.source
        benchmark = self.config.benchmark_symbol
        wanted = self.tickers + ([benchmark] if benchmark and benchmark not in self.tickers else [])
        provider = get_provider(source)
        available = provider.available() if provider is not None else stored_coverage(
            self.store, source)
        last = None
        if available is not None:
            check_known_tickers(wanted, list(available), source)
            last = max((available[t][1] for t in self.tickers if t in available), default=None)
            if last is not None and session.date() > last:
                raise DataSourceUnavailableError(
                    f"no {source} prices for {session.date()} yet (the data ends {last}): the "
                    "cycle is marked failed and runs again next time"
                    + (" (the sample ends 2022-12-28: pass --asof or use yfinance)"
                       if source == "sample" else "")
                )
        return provider, wanted, last

    def _refresh(self, session: pd.Timestamp) -> None:
        """Prices up to ``session`` in the store (only what is missing; a replay asks once, up
        to its last session)."""
        if self._coverage_checked is not None and session <= self._coverage_checked:
            return
        provider, wanted, last = self._source_end(session)
        end = max(session, self._replay_end or session)
        if last is not None:
            end = min(end, pd.Timestamp(last))
        ensure_prices(self.store, self.config.data.source, wanted,
                      self._account()["history_start"], end.date(), provider=provider)
        self._coverage_checked = end

    def _data(self, session: pd.Timestamp) -> tuple[MarketData, PricePanel]:
        """The market data known at ``session``'s close, from the account's history start."""
        if self._market is None or self._market_end is None or session > self._market_end:
            from quantorch.toolkit.market import load_market_data

            end = max(session, self._replay_end or session)
            self._market = load_market_data(self.store, self.config.data.source, self.tickers,
                                            self._account()["history_start"], end.date(),
                                            benchmark=self.config.benchmark_symbol)
            self._market_end = end
        market = self._market.truncate(session)
        if session not in market.prices.dates or market.prices.close.loc[session].isna().all():
            raise DataSourceUnavailableError(
                f"no {self.config.data.source} bars for {session.date()} in the store: the cycle "
                "is marked failed and runs again next time"
            )
        return market, market.prices

    def _book(self, session: pd.Timestamp, marks: np.ndarray) -> BookState:
        with self.store.connect(read_only=True) as con:
            held = repository.shares_held(con, self.account)
            cash = repository.cash_balance(con, self.account)
        row = self._account()
        cash = 0.0 if abs(cash) < 1e-6 else cash
        shares = np.array([held.get(t, 0.0) for t in self.tickers])
        peak = row["peak_equity"] if row["peak_equity"] is not None else float("nan")
        cooldown = pd.Timestamp(row["cooldown_until"]) if row["cooldown_until"] else None
        book = BookState(tuple(self.tickers), shares, cash, marks, session=session,
                         peak_equity=peak, cooldown_until=cooldown)
        return book.with_risk(peak_equity=max(book.peak_equity, book.equity),
                              cooldown_until=cooldown)

    def _decide(self, book, session, panel, market, close, run_id, profile, mark) -> int:
        from quantorch.kernel.executor import RunnerExecutor
        from quantorch.kernel.factory import routing_setup
        from quantorch.kernel.step import RuleWeights, decision_step
        from quantorch.orchestrator.dataset import decision_points
        from quantorch.toolkit.runner import ToolRunner

        sessions = calendar.sessions(panel.dates[0], session + pd.Timedelta(days=10))
        if self.config.backtest.strategy != ORCHESTRATOR:
            from quantorch.strategies import get_strategy

            name = self.config.backtest.strategy
            strategy = get_strategy(name, self.config.strategies.get(name))
            # the strategy over every decision date of the account (a rule may depend on where
            # it started, e.g. buy-and-hold proposes once); each row uses data up to its date
            first = pd.Timestamp(self._account()["first_session"])
            rebalance = self._account()["rebalance"]
            dates = pd.DatetimeIndex([d for d in calendar.sessions(first, session)
                                      if self._decides(pd.Timestamp(d), first, rebalance)])
            weights = strategy.target_weights(panel, dates)
            step = decision_step(book, session, None, profile, RuleWeights(name, weights), None,
                                 sessions=sessions)
        else:
            if self._setup is None:
                self._setup = routing_setup(self.config, store=self.store)
            setup, _layout = self._setup
            if hasattr(setup.orchestrator, "prepare"):
                raise UserInputError(
                    f"the {setup.orchestrator.name} orchestrator is a research baseline (it is "
                    "calibrated on a whole period): paper-trade the policy or a fixed router"
                )
            points = decision_points(panel, pd.DatetimeIndex([session]), self.tickers,
                                     setup.horizon, setup.slots, setup.normalisation)
            runner = ToolRunner(self.store, run_id=run_id, timeout_s=self.config.tools.timeout_s,
                                extra_dirs=self.config.tools.extra_dirs, log=False)
            try:
                executor = (RunnerExecutor(runner, market) if self.config.paper.tool_calls == "live"
                            else _panel_executor(market, setup, panel, session, self.config))
                step = decision_step(book, session, points, profile, setup, executor,
                                     sessions=sessions)
            finally:
                runner.close()
        # the decisions' bill is paid at the decision, before the orders are sized (the
        # kernel's "Decision bills": the same rule as a backtest)
        deltas = target_shares(book.shares, book.cash - step.bill_usd, step.order_targets, close,
                               self.costs, marks=book.marks)
        orders = orders_from_deltas(self.tickers, deltas, step.order_targets, close, session,
                                    self.account)
        after = step.book
        with self.store.transaction() as con:
            if step.decisions:
                repository.insert_decisions(con, pd.DataFrame(step.decisions).assign(run_id=run_id))
            if step.tool_calls:
                calls = pd.DataFrame(step.tool_calls)
                calls.insert(0, "run_id", run_id)
                calls.insert(0, "call_id", [f"{run_id}-{i}" for i in range(len(calls))])
                calls["created_at"] = dt.datetime.now(dt.UTC).replace(tzinfo=None)
                repository.insert_tool_calls(con, calls)
            if step.transcripts:
                repository.insert_transcripts(
                    con, pd.DataFrame(step.transcripts).assign(run_id=run_id))
            repository.insert_decision_bill(con, self.account, session, step.tool_cost_usd,
                                            step.llm_cost_usd)
            repository.insert_order_intents(con, self.account, orders,
                                            broker=self._broker().name, run_id=run_id)
            self._update_account(
                con, peak_equity=after.peak_equity,
                cooldown_until=after.cooldown_until.date() if after.cooldown_until else None,
            )
            mark("decided", con)
        return len(orders)

    def _submit(self, session, run_id, broker, mark) -> None:
        from quantorch.kernel.execution import Order

        with self.store.connect(read_only=True) as con:
            intents = repository.orders_for(con, self.account, session=session.date(),
                                            status="intent")
        orders = [
            Order(client_order_id=r.client_order_id, ticker=r.ticker, side=r.side,
                  quantity=float(r.quantity), decision_session=pd.Timestamp(r.decision_session),
                  target_weight=float(r.target_weight) if pd.notna(r.target_weight) else np.nan,
                  reference_price=float(r.reference_price) if pd.notna(r.reference_price)
                  else np.nan)
            for r in intents.itertuples(index=False)
        ]
        acks = broker.submit(orders, run_id=run_id) if orders else []
        _crash_point("sent")  # the broker has the orders, the store not their acks yet
        with self.store.transaction() as con:
            for ack in acks:
                repository.update_order(con, ack.client_order_id, status=ack.status,
                                        broker_order_id=ack.broker_order_id, reason=ack.reason)
            mark("orders_submitted", con)

    def _finish(self, session, book, marks, final, mark, *, decided: bool) -> None:
        """Positions and equity of the session; the peak moves with the close."""
        bench = None
        if self._market is not None and self._market.benchmark is not None:
            series = self._market.benchmark.loc[:session].dropna()
            if len(series):
                bench = float(series.iloc[-1])
        with self.store.transaction() as con:
            repository.upsert_positions(con, self.account, session.date(), [
                {"ticker": t, "quantity": float(q), "market_price": float(m),
                 "market_value": float(q * m) if np.isfinite(m) else None}
                for t, q, m in zip(book.tickers, book.shares, marks, strict=True) if q != 0
            ])
            if not decided:  # a decision stored the RiskGuard's state already
                self._update_account(con, peak_equity=book.peak_equity)
            repository.upsert_equity_row(con, account_run_id(self.account), {
                "date": session.date(), "equity": book.equity, "cash": book.cash,
                "gross_exposure": book.gross_exposure, "benchmark_equity": bench,
            })
            equity = con.execute(
                "SELECT date, equity FROM equity WHERE run_id = ? ORDER BY date",
                [account_run_id(self.account)],
            ).df()
            curve = pd.Series(equity["equity"].to_numpy(), index=pd.to_datetime(equity["date"]))
            metrics = {k: (None if not np.isfinite(v) else float(v))
                       for k, v in performance_metrics(curve).items()}
            repository.extend_run(con, account_run_id(self.account), session.date(), metrics)
            mark(final, con)


def _keeps_ledger(broker: Broker) -> bool:
    """Whether the broker's shares and cash are the store's ledger itself (the simulator):
    reconciling them would compare the ledger with itself."""
    return bool(getattr(broker, "keeps_ledger", False))


def _marks_at(panel: PricePanel, index: int) -> np.ndarray:
    """Each ticker's mark at the session: its close, else its reference price, else the last."""
    close = panel.close.to_numpy(dtype=np.float64)[: index + 1]
    opens = panel.open.to_numpy(dtype=np.float64)[: index + 1]
    marks = session_marks(close, np.where(np.isnan(opens), close, opens))
    return pd.DataFrame(marks).ffill().to_numpy()[-1]


def _panel_executor(market, setup, panel, session, config):
    from quantorch.kernel.executor import PanelExecutor

    return PanelExecutor.build(market, setup.slots, list(panel.tickers),
                               pd.DatetimeIndex([session]), extra_dirs=config.tools.extra_dirs)


def broker_cash_expected(con, account: str, broker: Broker) -> float:
    """The cash the broker should report by the ledger: the simulator's cash is the ledger's;
    a real broker never paid the decisions' bills (tools and model tokens are paid outside
    it), so its cash is the ledger's before them."""
    cash = repository.cash_balance(con, account)
    return cash if _keeps_ledger(broker) else cash + repository.decision_costs_paid(con, account)


def reconciliation(
    ledger_shares: dict[str, float], ledger_cash: float, broker_shares: dict[str, float],
    broker_cash: float,
) -> list[str]:
    """The differences between what the broker reports and what the ledger holds."""
    diffs = []
    for ticker in sorted(set(ledger_shares) | set(broker_shares)):
        a, b = ledger_shares.get(ticker, 0.0), broker_shares.get(ticker, 0.0)
        if abs(a - b) > SHARE_TOLERANCE * max(1.0, abs(a)):
            diffs.append(f"{ticker} ledger {a:,.6f} shares, broker {b:,.6f}")
    if abs(ledger_cash - broker_cash) > CASH_TOLERANCE:
        diffs.append(f"cash ledger ${ledger_cash:,.2f}, broker ${broker_cash:,.2f}")
    return diffs


def check_account(store: Store, account: str) -> dict:
    """The account row, or one clear error listing the accounts there are."""
    if not store.exists:
        raise UserInputError(f"no paper account '{account}': the database {store.path} does not "
                             "exist yet (start with `quantorch paper run-once` or `paper replay`)")
    with store.connect(read_only=True) as con:
        row = repository.account(con, account)
        names = repository.accounts(con)
    if row is None:
        listing = ", ".join(names) if names else "none yet"
        raise UserInputError(f"no paper account '{account}'{did_you_mean(account, names)}; "
                             f"accounts: {listing}")
    return row


def paper_trader(
    config: QuantorchConfig,
    store: Store,
    account: str,
    *,
    profile: str | None = None,
    broker: str | None = None,
    orchestrator: str | None = None,
    progress: Progress = SILENT,
) -> PaperTrader:
    """The trader of ``account``: an existing account keeps the profile, broker and
    orchestrator it was opened with (passing others is refused when its cycle runs); a new one
    takes ``profile``, ``broker`` and ``orchestrator``, else the config's."""
    from quantorch.orchestrator import ORCHESTRATORS

    overrides: dict[str, object] = {"paper.account": account}
    row = None
    if store.exists:
        with store.connect(read_only=True) as con:
            row = repository.account(con, account)
    if orchestrator is None and row is not None and row["strategy"] in ORCHESTRATORS:
        orchestrator = row["strategy"]
    if orchestrator is not None:
        overrides["orchestrator.name"] = orchestrator
        overrides["backtest.strategy"] = ORCHESTRATOR
    if profile is not None:
        overrides["paper.profile"] = profile
    elif row is not None:
        overrides["paper.profile"] = row["profile_ref"]
    if broker is not None:
        overrides["paper.broker"] = broker
    elif row is not None:
        overrides["paper.broker"] = row["broker"]
    return PaperTrader(config.with_overrides(overrides), store, progress=progress)


def run_scheduled_cycle(config_path: str | None, db_path: str, accounts: list[dict]) -> None:
    """The scheduler's job (an importable name): each account's cycle of the session that
    closed last. ``accounts``: ``{"account": NAME, "profile": NAME_OR_NONE, "broker": ...,
    "orchestrator": NAME_OR_NONE}``.
    One account failing does not stop the others; the failures are raised together after."""
    config = load_config(Path(config_path) if config_path else None)
    store = Store(Path(db_path))
    session = calendar.last_completed_session()
    failures = []
    for spec in accounts:
        try:
            trader = paper_trader(config, store, spec["account"], profile=spec.get("profile"),
                                  broker=spec.get("broker"),
                                  orchestrator=spec.get("orchestrator"))
            trader.run(session)
        except QuantorchError as exc:
            failures.append((spec["account"], exc))
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        raise failures[0][1].__class__(
            "; ".join(f"account {name}: {exc}" for name, exc in failures))
