"""A paper-trading cycle end to end through the real Alpaca adapter, offline.

:class:`~quantorch.paper.cycle.PaperTrader` drives :class:`~quantorch.brokers.alpaca.AlpacaBroker`
(real alpaca-py code underneath) against :class:`FakeAlpaca`, a stateful fake of Alpaca's paper
HTTP API served through requests-mock at the paths and in the JSON shapes alpaca-py uses (the
shapes of tests/integration/test_alpaca_broker.py): orders by client order id (a known id is
refused with Alpaca's 422), a session open that fills the waiting DAY market orders at the
sample's real prices (the sample has no opens: a bar's close stands for it, as in the
simulator) and writes FILL activities, cash and positions. The account is a buy-and-hold of the
20 sample stocks decided at the 2021-03-01 close and filled at the 2021-03-02 open.

The fake books each fill at its exact ``qty x price`` except in
:func:`test_cash_booked_to_the_cent_per_fill`, which books it to the cent as Alpaca does and is
an expected failure until the ledger does the same (see its reason).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
import traceback
import uuid
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import duckdb
import numpy as np
import pandas as pd
import pytest
import requests

pytest.importorskip("alpaca")
requests_mock = pytest.importorskip("requests_mock")

from quantorch.brokers import alpaca as alpaca_mod
from quantorch.brokers.alpaca import PAPER_URL, AlpacaBroker, BrokerUnavailableError
from quantorch.config import load_config
from quantorch.data.calendar import EXCHANGE_TZ
from quantorch.errors import QuantorchError
from quantorch.kernel.execution import client_order_id
from quantorch.paper import cycle as cycle_mod
from quantorch.paper.cycle import CASH_TOLERANCE, PaperTrader, ReconciliationError
from quantorch.paper.reconcile import reconcile
from quantorch.redact import redact
from quantorch.store import Store
from tests.integration.test_alpaca_broker import error, trade_account

ACCOUNT = "acct"
DECIDED, FILLED, NEXT = dt.date(2021, 3, 1), dt.date(2021, 3, 2), dt.date(2021, 3, 3)
OPENING_CASH = Decimal("100000.00")
KEY, SECRET = "PKE2EPLANTEDKEY4R7T9W", "e2e-planted-secret-Q8w7E6r5T4y3U2i1O0pLkJ"
CENT = Decimal("0.01")
#: 16:30 New York on the decision session: the cycle sends its orders after the close.
SENT_AT = pd.Timestamp("2021-03-01 16:30", tz=EXCHANGE_TZ)
DUPLICATE = error(40010001, "client_order_id must be unique")
_OPEN = ("new", "accepted", "pending_new", "partially_filled")


# ---- the fake Alpaca paper API ---------------------------------------------------------------


def _iso(when: pd.Timestamp) -> str:
    return when.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(number: Decimal) -> str:
    """A decimal as Alpaca writes it: no exponent, no trailing zeros."""
    text = format(number.normalize(), "f")
    return text if text not in ("-0", "") else "0"


def _asset_id(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-asset/{symbol}"))


def _query(request) -> dict[str, str]:
    """The query as sent (requests-mock lowercases ``request.qs``; ids are case-sensitive)."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(request.url).query).items()}


class FakeAlpaca:
    """Alpaca's paper trading API for one account, with state (see the module docstring).

    ``failures[(method, path)]`` is a list of ``(status, body)`` answers served (and consumed)
    before the real one; ``timeout_after_store`` makes the first POST of each client order id
    store the order and then time out, as a POST whose answer was lost on the way back.

    ``cents_per_fill``: book each execution's notional rounded to the cent (round half to even),
    as Alpaca books its transactions (the default); False books the exact ``qty x price``.
    See :func:`test_cash_booked_to_the_cent_per_fill`.
    """

    def __init__(self, cash: Decimal = OPENING_CASH, *, cents_per_fill: bool = True) -> None:
        self.cash = cash
        self.cents_per_fill = cents_per_fill
        self.positions: dict[str, Decimal] = {}
        self.cost: dict[str, Decimal] = {}
        self.marks: dict[str, Decimal] = {}
        self.orders: dict[str, dict] = {}  # by client order id, in submission order
        self.activities: list[dict] = []
        self.posts: list[dict] = []  # every POST /v2/orders body, refused ones included
        self.unexpected: list[str] = []
        self.failures: dict[tuple[str, str], list[tuple[int, dict | str]]] = {}
        self.timeout_after_store = False
        self._timed_out: set[str] = set()
        self.clock = SENT_AT
        self._fill_numbers = itertools.count()

    # ---- wiring ----------------------------------------------------------------------------

    def install(self, mocker) -> None:
        # requests-mock tries the newest registration first: the catch-all goes in first
        mocker.register_uri(requests_mock.ANY, re.compile(re.escape(PAPER_URL) + r"/.*"),
                            json=self._unknown)
        routes = [
            ("POST", "/v2/orders", self._post_order),
            ("GET", "/v2/orders", self._list_orders),
            ("GET", "/v2/orders:by_client_order_id", self._by_client_id),
            ("GET", "/v2/positions", self._positions),
            ("GET", "/v2/account", self._account),
            ("GET", "/v2/account/activities/FILL", self._fills),
        ]
        for method, path, answer in routes:
            mocker.register_uri(method, PAPER_URL + path, json=self._serve(method, path, answer))

    def _serve(self, method, path, answer):
        def serve(request, context):
            queued = self.failures.get((method, path))
            if queued:
                context.status_code, body = queued.pop(0)
                return body
            return answer(request, context)
        return serve

    def _unknown(self, request, context):
        self.unexpected.append(f"{request.method} {request.path}")
        context.status_code = 404
        return error(40410000, "endpoint not found")

    # ---- endpoints -------------------------------------------------------------------------

    def _post_order(self, request, context):
        body = request.json()
        self.posts.append(body)
        cid = body["client_order_id"]
        if cid in self.orders:
            context.status_code = 422
            return DUPLICATE
        assert (body["type"], body["time_in_force"]) == ("market", "day"), body
        assert body["side"] in ("buy", "sell") and float(body["qty"]) > 0, body
        self.clock += pd.Timedelta(milliseconds=37)
        stamp = _iso(self.clock)
        self.orders[cid] = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-order/{cid}")),
            "client_order_id": cid,
            "created_at": stamp, "updated_at": stamp, "submitted_at": stamp,
            "filled_at": None, "expired_at": None, "canceled_at": None, "failed_at": None,
            "replaced_at": None, "replaced_by": None, "replaces": None,
            "asset_id": _asset_id(body["symbol"]), "symbol": body["symbol"],
            "asset_class": "us_equity", "notional": None,
            "qty": _text(Decimal(str(body["qty"]))), "filled_qty": "0",
            "filled_avg_price": None, "order_class": "", "order_type": "market",
            "type": "market", "side": body["side"],
            "position_intent": "buy_to_open" if body["side"] == "buy" else "sell_to_close",
            "time_in_force": "day", "limit_price": None, "stop_price": None,
            "status": "accepted", "extended_hours": False, "legs": None,
            "trail_percent": None, "trail_price": None, "hwm": None, "subtag": None,
            "source": None,
            "expires_at": _iso(self.clock.normalize() + pd.Timedelta(days=1, hours=16)),
        }
        if self.timeout_after_store and cid not in self._timed_out:
            self._timed_out.add(cid)  # Alpaca has it; the answer never comes back
            raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=15.0)")
        return self.orders[cid]

    def _by_client_id(self, request, context):
        found = self.orders.get(_query(request).get("client_order_id", ""))
        if found is None:
            context.status_code = 404
            return error(40410000, "order not found")
        return found

    def _list_orders(self, request, context):
        query = _query(request)
        status = query.get("status", "open")
        listed = list(self.orders.values())
        if status == "open":
            listed = [o for o in listed if o["status"] in _OPEN]
        elif status == "closed":
            listed = [o for o in listed if o["status"] not in _OPEN]
        if "after" in query:  # exclusive, on submitted_at
            after = pd.Timestamp(query["after"])
            listed = [o for o in listed if pd.Timestamp(o["submitted_at"]) > after]
        if "until" in query:
            until = pd.Timestamp(query["until"])
            listed = [o for o in listed if pd.Timestamp(o["submitted_at"]) < until]
        listed.sort(key=lambda o: o["submitted_at"], reverse=query.get("direction") != "asc")
        return listed[: min(int(query.get("limit", 50)), 500)]

    def _fills(self, request, context):
        query = _query(request)
        listed = sorted(self.activities, key=lambda a: (a["transaction_time"], a["id"]))
        if "after" in query:
            after = pd.Timestamp(query["after"])
            listed = [a for a in listed if pd.Timestamp(a["transaction_time"]) > after]
        if query.get("direction", "desc") != "asc":
            listed.reverse()
        if "page_token" in query:
            ids = [a["id"] for a in listed]
            listed = listed[ids.index(query["page_token"]) + 1:]
        return listed[: min(int(query.get("page_size", 100)), 100)]

    def _positions(self, request, context):
        held = []
        for symbol, qty in sorted(self.positions.items()):
            if qty == 0:
                continue
            mark = self.marks[symbol]
            entry = (self.cost[symbol] / qty).quantize(Decimal("0.0001"))
            value = (qty * mark).quantize(Decimal("0.0001"))
            basis = self.cost[symbol].quantize(Decimal("0.0001"))
            held.append({
                "asset_id": _asset_id(symbol), "symbol": symbol, "exchange": "NYSE",
                "asset_class": "us_equity", "asset_marginable": True, "qty": _text(qty),
                "avg_entry_price": _text(entry), "side": "long" if qty > 0 else "short",
                "market_value": _text(value), "cost_basis": _text(basis),
                "unrealized_pl": _text(value - basis),
                "unrealized_plpc": _text(((value - basis) / basis).quantize(Decimal("1e-10"))),
                "unrealized_intraday_pl": _text(value - basis),
                "unrealized_intraday_plpc": "0", "current_price": _text(mark),
                "lastday_price": _text(mark), "change_today": "0", "qty_available": _text(qty),
            })
        return held

    def _account(self, request, context):
        return trade_account(_text(self.cash.quantize(CENT)))

    # ---- the market ------------------------------------------------------------------------

    def open_session(self, day: dt.date, prices: dict[str, float], *,
                     partial: dict[str, float] | None = None) -> None:
        """The session's open: every waiting order fills at ``prices`` (to the cent) at 09:30
        New York; an order of ``partial`` fills that fraction at the open and the rest at
        11:02 a few cents higher (two executions, two activities)."""
        opening = pd.Timestamp(f"{day} 09:30", tz=EXCHANGE_TZ)
        for k, order in enumerate(list(self.orders.values())):
            if order["status"] not in _OPEN or pd.Timestamp(order["submitted_at"]) >= opening:
                continue
            symbol = order["symbol"]
            price = Decimal(str(prices[symbol])).quantize(CENT, ROUND_HALF_UP)
            at = opening + pd.Timedelta(milliseconds=11 * k + 3)
            rest = Decimal(order["qty"]) - Decimal(order["filled_qty"])
            if partial and symbol in partial:
                first = (rest * Decimal(str(partial[symbol]))).quantize(Decimal("1e-9"))
                self.execute(order, first, price, at)
                later = pd.Timestamp(f"{day} 11:02:17.412", tz=EXCHANGE_TZ)
                self.execute(order, rest - first, price + Decimal("0.07"), later)
            else:
                self.execute(order, rest, price, at)
            self.marks[symbol] = price

    def execute(self, order: dict, qty: Decimal, price: Decimal, at: pd.Timestamp) -> dict:
        """One execution of ``order``: its activity, the order's fill state, cash, position."""
        filled_before = Decimal(order["filled_qty"])
        filled = filled_before + qty
        leaves = Decimal(order["qty"]) - filled
        average = price if order["filled_avg_price"] is None else (
            (Decimal(order["filled_avg_price"]) * filled_before + price * qty) / filled)
        done = leaves == 0
        status = "filled" if done else "partially_filled"
        n = next(self._fill_numbers)
        stamp = at.tz_convert(EXCHANGE_TZ).strftime("%Y%m%d%H%M%S%f")[:17]  # New York time
        execution = uuid.uuid5(uuid.NAMESPACE_URL, f"fill/{order['id']}/{n}")
        activity = {
            "id": f"{stamp}::{execution}",
            "activity_type": "FILL", "transaction_time": _iso(at),
            "type": "fill" if done else "partial_fill", "price": _text(price), "qty": _text(qty),
            "side": order["side"], "symbol": order["symbol"], "leaves_qty": _text(leaves),
            "order_id": order["id"], "cum_qty": _text(filled), "order_status": status,
        }
        self.activities.append(activity)
        order.update(filled_qty=_text(filled), status=status, updated_at=_iso(at),
                     filled_avg_price=_text(average.quantize(Decimal("0.0001"))),
                     filled_at=_iso(at) if done else None)
        notional = qty * price
        if self.cents_per_fill:  # Alpaca rounds each transaction to the cent, half to even
            notional = notional.quantize(CENT, ROUND_HALF_EVEN)
        sign = 1 if order["side"] == "buy" else -1
        self.cash -= sign * notional
        symbol = order["symbol"]
        self.positions[symbol] = self.positions.get(symbol, Decimal(0)) + sign * qty
        self.cost[symbol] = self.cost.get(symbol, Decimal(0)) + sign * qty * price
        self.marks.setdefault(symbol, price)
        return activity


# ---- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    for alias in ("ALPACA_API_KEY_ID", "ALPACA_API_SECRET_KEY"):
        monkeypatch.delenv(alias, raising=False)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(alpaca_mod, "_sleep", waits.append)
    return waits


@pytest.fixture
def alpaca(keys, sleeps):
    """The fake, installed (anything else over HTTP fails: requests-mock lets nothing out)."""
    fake = FakeAlpaca()
    with requests_mock.Mocker(case_sensitive=True) as mocker:
        fake.install(mocker)
        fake.mocker = mocker
        yield fake
    assert fake.unexpected == []


def trader(db: Path) -> PaperTrader:
    """A fresh trader and adapter, as a new process builds them."""
    config = load_config().with_overrides({
        "paper.account": ACCOUNT, "paper.broker": "alpaca", "backtest.strategy": "buy-and-hold"})
    return PaperTrader(config, Store(db), broker=AlpacaBroker(ACCOUNT, retries=1, backoff_s=0))


def rows(db: Path, sql: str, params=()) -> pd.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def sample_prices(db: Path, day: dt.date) -> dict[str, float]:
    """The sample's price at ``day``'s open (its close where, as in the sample, no open)."""
    bars = rows(db, "SELECT ticker, coalesce(open, close) AS price FROM prices "
                    "WHERE source = 'sample' AND date = ?", [day])
    return dict(zip(bars["ticker"], bars["price"], strict=True))


def ledger(db: Path) -> tuple[dict[str, float], float]:
    held = rows(db, "SELECT ticker, sum(CASE side WHEN 'buy' THEN quantity ELSE -quantity END) "
                    "AS q FROM broker_fills WHERE account = ? GROUP BY ticker", [ACCOUNT])
    cash = rows(db, "SELECT coalesce(sum(amount), 0) AS c FROM cash_ledger WHERE account = ?",
                [ACCOUNT])
    return dict(zip(held["ticker"], held["q"], strict=True)), float(cash["c"].iloc[0])


def opened_and_filled(db: Path, fake: FakeAlpaca, **open_kwargs) -> list:
    """Cycle 1 (decides and sends), the 03-02 open at the fake, cycle 2 (settles)."""
    first = trader(db).run(DECIDED)
    fake.open_session(FILLED, sample_prices(db, FILLED), **open_kwargs)
    return first + trader(db).run(FILLED)


def assert_ledger_is_alpaca(db: Path, fake: FakeAlpaca) -> None:
    held, cash = ledger(db)
    alpaca_held = {s: float(q) for s, q in fake.positions.items() if q}
    assert held.keys() == alpaca_held.keys()
    for symbol, quantity in held.items():
        assert quantity == pytest.approx(alpaca_held[symbol], rel=1e-9, abs=1e-9), symbol
    assert abs(cash - float(fake.cash)) <= CASH_TOLERANCE, (cash, fake.cash)


# ---- 1. open, decide, send, fill, settle, reconcile ---------------------------------------------


def test_a_buy_and_hold_account_trades_a_day_through_alpaca(loaded_db, alpaca):
    tickers = list(load_config().universe)
    [first] = trader(loaded_db).run(DECIDED)

    assert (first.status, first.decided, first.orders) == ("done", True, 20)
    ids = [client_order_id(ACCOUNT, DECIDED, t) for t in tickers]
    assert [p["client_order_id"] for p in alpaca.posts] == ids  # one POST each, in order
    assert {(p["type"], p["time_in_force"], p["side"]) for p in alpaca.posts} == {
        ("market", "day", "buy")}
    sent = rows(loaded_db, "SELECT * FROM orders WHERE account = ? ORDER BY client_order_id",
                [ACCOUNT]).set_index("client_order_id")
    assert sorted(sent.index) == sorted(ids)
    assert (sent["status"] == "accepted").all()
    for cid, order in alpaca.orders.items():
        assert sent.loc[cid, "broker_order_id"] == order["id"]
        assert float(order["qty"]) == pytest.approx(round(sent.loc[cid, "quantity"], 9),
                                                    abs=1e-9)
    # the account opened on the flat Alpaca account with Alpaca's cash
    account = rows(loaded_db, "SELECT initial_cash, broker, halted_reason FROM paper_accounts")
    assert account.values.tolist() == [[100000.0, "alpaca", None]]
    deposit = rows(loaded_db, "SELECT session, kind, amount FROM cash_ledger "
                              "WHERE entry_key = 'opening-deposit'")
    assert deposit.values.tolist() == [[pd.Timestamp(DECIDED), "deposit", 100000.0]]

    opens = sample_prices(loaded_db, FILLED)
    alpaca.open_session(FILLED, opens)
    [second] = trader(loaded_db).run(FILLED)

    assert (second.status, second.decided, second.fills) == ("done", False, 20)
    fills = rows(loaded_db, "SELECT * FROM broker_fills WHERE account = ?", [ACCOUNT])
    activities = {a["id"]: a for a in alpaca.activities}
    assert sorted(fills["broker_fill_id"]) == sorted(activities) and len(activities) == 20
    for fill in fills.itertuples():
        activity = activities[fill.broker_fill_id]
        assert fill.client_order_id == next(
            c for c, o in alpaca.orders.items() if o["id"] == activity["order_id"])
        assert (fill.ticker, fill.side) == (activity["symbol"], "buy")
        assert fill.quantity == pytest.approx(float(activity["qty"]), rel=1e-12)
        assert fill.fill_price == float(activity["price"])
        assert fill.fill_price == pytest.approx(opens[fill.ticker], abs=0.005)  # real prices
        # within a day's move of the price the order was sized at (the 03-01 close)
        reference = sent.loc[fill.client_order_id, "reference_price"]
        assert 0.85 < fill.fill_price / reference < 1.15
        assert (fill.decision_session, fill.fill_session) == (
            pd.Timestamp(DECIDED), pd.Timestamp(FILLED))
        assert fill.fees == 0.0
    settled = rows(loaded_db, "SELECT client_order_id, status, filled_quantity, quantity "
                              "FROM orders WHERE account = ?", [ACCOUNT])
    assert (settled["status"] == "filled").all()
    np.testing.assert_allclose(settled["filled_quantity"], settled["quantity"], rtol=1e-9)
    assert_ledger_is_alpaca(loaded_db, alpaca)
    assert rows(loaded_db, "SELECT halted_reason FROM paper_accounts").iloc[0, 0] is None
    cycles = rows(loaded_db, "SELECT session, status FROM cycles ORDER BY session")
    assert cycles["status"].tolist() == ["done", "done"]
    positions = rows(loaded_db, "SELECT ticker, quantity FROM positions WHERE session = ?",
                     [FILLED])
    assert dict(zip(positions["ticker"], positions["quantity"], strict=True)) == pytest.approx(
        {s: float(q) for s, q in alpaca.positions.items()})
    assert reconcile(trader(loaded_db)).differences == []


# ---- 2. a done cycle again: nothing --------------------------------------------------------------


def test_a_done_cycle_run_again_sends_nothing(loaded_db, alpaca):
    opened_and_filled(loaded_db, alpaca)
    before = len(alpaca.mocker.request_history)
    fills = rows(loaded_db, "SELECT count(*) FROM broker_fills").iloc[0, 0]
    ledger_rows = rows(loaded_db, "SELECT count(*) FROM cash_ledger").iloc[0, 0]

    [again] = trader(loaded_db).run(FILLED)

    assert again.status == "already done"
    calls = alpaca.mocker.request_history[before:]
    assert [r for r in calls if r.method == "POST"] == []
    assert calls == []  # not even a read: the cycle is known done from the store
    assert rows(loaded_db, "SELECT count(*) FROM broker_fills").iloc[0, 0] == fills
    assert rows(loaded_db, "SELECT count(*) FROM cash_ledger").iloc[0, 0] == ledger_rows
    assert len(alpaca.orders) == 20


# ---- 3. crash safety at the broker edge ----------------------------------------------------------


class Killed(BaseException):
    """The process dying (SIGKILL): no handler of the cycle sees it."""


def test_orders_sent_before_a_crash_are_adopted_not_sent_again(loaded_db, alpaca, monkeypatch):
    def crash(status: str) -> None:
        if status == "sent":  # the broker has the orders, the store not their acks
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(cycle_mod, "_crash_point", crash)
        with pytest.raises(Killed):
            trader(loaded_db).run(DECIDED)
    assert len(alpaca.orders) == len(alpaca.posts) == 20
    stored = rows(loaded_db, "SELECT status, broker_order_id FROM orders")
    assert (stored["status"] == "intent").all() and stored["broker_order_id"].isna().all()
    assert rows(loaded_db, "SELECT status FROM cycles").iloc[0, 0] == "decided"

    [resumed] = trader(loaded_db).run(DECIDED)  # the restart

    assert (resumed.status, resumed.resumed_from) == ("done", "decided")
    assert len(alpaca.orders) == 20  # exactly one order per client order id at Alpaca
    assert len(alpaca.posts) == 40  # the 20 retries were refused as duplicates
    posted = pd.Series([p["client_order_id"] for p in alpaca.posts])
    assert (posted.value_counts() == 2).all()
    stored = rows(loaded_db, "SELECT client_order_id, status, broker_order_id FROM orders")
    assert (stored["status"] == "accepted").all()
    assert dict(zip(stored["client_order_id"], stored["broker_order_id"], strict=True)) == {
        cid: o["id"] for cid, o in alpaca.orders.items()}

    alpaca.open_session(FILLED, sample_prices(loaded_db, FILLED))
    [settled] = trader(loaded_db).run(FILLED)
    assert settled.fills == 20
    assert_ledger_is_alpaca(loaded_db, alpaca)


def test_a_post_whose_answer_was_lost_is_retried_and_adopted(loaded_db, alpaca, sleeps):
    alpaca.timeout_after_store = True  # every first POST reaches Alpaca, its answer does not

    [first] = trader(loaded_db).run(DECIDED)

    assert first.status == "done" and first.orders == 20
    assert len(alpaca.orders) == 20 and len(alpaca.posts) == 40
    assert sleeps == [0] * 20  # one retry per order, without waiting (backoff_s=0)
    by_client_id = [r for r in alpaca.mocker.request_history
                    if r.path == "/v2/orders:by_client_order_id"]
    assert len(by_client_id) == 20
    stored = rows(loaded_db, "SELECT client_order_id, status, broker_order_id FROM orders")
    assert (stored["status"] == "accepted").all()
    assert dict(zip(stored["client_order_id"], stored["broker_order_id"], strict=True)) == {
        cid: o["id"] for cid, o in alpaca.orders.items()}


# ---- 4. a partial fill ----------------------------------------------------------------------------


def test_a_partial_then_full_fill_is_stored_once_per_execution(loaded_db, alpaca):
    outcomes = opened_and_filled(loaded_db, alpaca, partial={"AAPL": 0.4})

    assert outcomes[-1].fills == 21
    cid = client_order_id(ACCOUNT, DECIDED, "AAPL")
    executions = [a for a in alpaca.activities if a["symbol"] == "AAPL"]
    assert [a["type"] for a in executions] == ["partial_fill", "fill"]
    stored = rows(loaded_db, "SELECT broker_fill_id, quantity, fill_price FROM broker_fills "
                             "WHERE client_order_id = ? ORDER BY broker_fill_id", [cid])
    assert stored["broker_fill_id"].tolist() == [a["id"] for a in executions]
    np.testing.assert_allclose(stored["quantity"], [float(a["qty"]) for a in executions])
    order = rows(loaded_db, "SELECT status, quantity, filled_quantity FROM orders "
                            "WHERE client_order_id = ?", [cid]).iloc[0]
    assert order["status"] == "filled"
    assert order["filled_quantity"] == pytest.approx(stored["quantity"].sum(), rel=1e-12)
    assert order["filled_quantity"] == pytest.approx(order["quantity"], rel=1e-9)
    assert_ledger_is_alpaca(loaded_db, alpaca)

    # the next cycle settles again: Alpaca reports the same 21 executions, none is added
    counts = [rows(loaded_db, f"SELECT count(*) FROM {t}").iloc[0, 0]
              for t in ("broker_fills", "cash_ledger")]
    [repeat] = trader(loaded_db).run(NEXT)
    assert repeat.status == "done" and repeat.fills == 21
    assert [rows(loaded_db, f"SELECT count(*) FROM {t}").iloc[0, 0]
            for t in ("broker_fills", "cash_ledger")] == counts
    assert_ledger_is_alpaca(loaded_db, alpaca)
    assert reconcile(trader(loaded_db)).differences == []


# ---- 5. Alpaca and the ledger differ ---------------------------------------------------------------


def test_shares_traded_by_hand_halt_the_account_until_removed(loaded_db, alpaca):
    opened_and_filled(loaded_db, alpaca)
    alpaca.positions["AAPL"] += 3  # someone moved shares into the account by hand

    with pytest.raises(ReconciliationError, match=r"AAPL ledger [\d,.]+ shares, broker"):
        trader(loaded_db).run(NEXT)
    halted = rows(loaded_db, "SELECT halted_reason FROM paper_accounts").iloc[0, 0]
    assert halted.startswith("broker and ledger differ: AAPL")
    with pytest.raises(ReconciliationError, match="is halted"):
        trader(loaded_db).run(NEXT)

    result = reconcile(trader(loaded_db))
    assert not result.resumed and result.halted == halted
    assert [c for c, _ in result.differences] == ["broker"]
    assert "AAPL" in result.differences[0][1]
    assert rows(loaded_db, "SELECT halted_reason FROM paper_accounts").iloc[0, 0] == halted

    alpaca.positions["AAPL"] -= 3  # the trader puts the account right at Alpaca
    result = reconcile(trader(loaded_db))
    assert result.differences == [] and result.resumed
    assert rows(loaded_db, "SELECT halted_reason FROM paper_accounts").iloc[0, 0] is None
    [resumed] = trader(loaded_db).run(NEXT)
    assert resumed.status == "done"
    assert len(alpaca.orders) == 20


# ---- 6. the keys stay secret ---------------------------------------------------------------------


def test_the_keys_appear_in_no_row_log_or_error(loaded_db, alpaca, caplog):
    caplog.set_level(logging.DEBUG)
    echo = f"APCA-API-KEY-ID={KEY} APCA-API-SECRET-KEY: {SECRET} (key {KEY}, secret {SECRET})"
    texts: list[str] = []

    def failing(run):
        with pytest.raises(QuantorchError) as caught:
            run()
        exc = caught.value
        texts.extend([str(exc), repr(exc), redact("".join(traceback.format_exception(exc)))])
        return exc

    # an order refused with the keys echoed back (its reason is stored with the order)
    alpaca.failures[("POST", "/v2/orders")] = [(403, error(40310000, f"forbidden: {echo}"))]
    trader(loaded_db).run(DECIDED)
    reasons = rows(loaded_db, "SELECT reason FROM orders WHERE status = 'rejected'")["reason"]
    assert len(reasons) == 1 and "HTTP 403: forbidden" in reasons.iloc[0]
    assert "***" in reasons.iloc[0]  # the echo was stored, masked
    alpaca.open_session(FILLED, sample_prices(loaded_db, FILLED))
    # Alpaca down, echoing the keys: the cycle fails (its message is stored), then completes
    alpaca.failures[("GET", "/v2/account")] = [(500, echo), (503, error(50310000, echo))]
    exc = failing(lambda: trader(loaded_db).run(FILLED))
    assert isinstance(exc, BrokerUnavailableError)
    message = rows(loaded_db, "SELECT message FROM cycles WHERE session = ?", [FILLED])
    assert message.iloc[0, 0].startswith("will retry: Alpaca did not answer GET /v2/account")
    assert "***" in message.iloc[0, 0]
    # the keys refused: one clear error naming the variables, not their values
    alpaca.failures[("GET", "/v2/orders")] = [(401, error(40110000, echo))]
    exc = failing(lambda: trader(loaded_db).run(FILLED))
    assert "APCA_API_KEY_ID" in str(exc) and "***" in str(exc)
    message = rows(loaded_db, "SELECT message FROM cycles WHERE session = ?", [FILLED])
    assert "HTTP 401" in message.iloc[0, 0] and "***" in message.iloc[0, 0]
    [done] = trader(loaded_db).run(FILLED)
    assert done.status == "done" and done.fills == 19
    # the keys were really used, from the environment
    sent = alpaca.mocker.request_history[0]
    assert (sent.headers["APCA-API-KEY-ID"], sent.headers["APCA-API-SECRET-KEY"]) == (KEY, SECRET)

    texts.append(caplog.text)
    texts.extend(str(r.__dict__) for r in caplog.records)
    leaks = [t for t in texts if KEY in t or SECRET in t]
    assert not leaks, leaks
    # every text value of every table, then the file's bytes (the WAL too, if any)
    con = duckdb.connect(str(loaded_db), read_only=True)
    try:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_type = 'BASE TABLE'").fetchall()]
        cells = 0
        for table in tables:
            frame = con.execute(f'SELECT * FROM "{table}"').df()
            for column in frame.columns:
                values = frame[column].dropna().astype(str)
                cells += len(values)
                hits = values[values.str.contains(KEY, regex=False)
                              | values.str.contains(SECRET, regex=False)]
                assert hits.empty, (table, column, hits.tolist())
    finally:
        con.close()
    assert cells > 1000 and {"orders", "cycles", "cash_ledger"} <= set(tables)
    for path in loaded_db.parent.glob(f"{loaded_db.name}*"):
        blob = path.read_bytes()
        assert KEY.encode() not in blob and SECRET.encode() not in blob, path


# ---- 7. Alpaca's cents ---------------------------------------------------------------------------


def test_cash_booked_to_the_cent_per_fill(loaded_db, alpaca):
    alpaca.cents_per_fill = True
    trader(loaded_db).run(DECIDED)
    alpaca.open_session(FILLED, sample_prices(loaded_db, FILLED))
    exact = sum(Decimal(a["qty"]) * Decimal(a["price"]) for a in alpaca.activities)
    booked = OPENING_CASH - alpaca.cash
    assert abs(exact - booked) > Decimal(str(CASH_TOLERANCE))  # 20 roundings add up past it

    # the adapter books each fill's cash from the activity's decimals, to the cent like Alpaca
    [settled] = trader(loaded_db).run(FILLED)

    assert settled.status == "done"
    assert_ledger_is_alpaca(loaded_db, alpaca)
