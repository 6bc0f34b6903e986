"""The Alpaca adapter against recorded-shape HTTP: real alpaca-py code, requests-mock underneath.

Every JSON body below has the fields Alpaca's paper API sends and alpaca-py's models require
(``alpaca/trading/models.py``: ``Order``, ``Position``, ``TradeAccount``; the FILL activity shape
of ``GET /v2/account/activities``), at the paths ``alpaca/trading/client.py`` calls. Prices are the
real closes of 2022-12-27/28 from skfolio's S&P 500 data set; the orders are decided at the
2022-12-27 close, sent at 16:30 New York and filled at the 2022-12-28 open.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
import uuid
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
import requests

pytest.importorskip("alpaca")
requests_mock = pytest.importorskip("requests_mock")

from quantorch.brokers import OrderAck
from quantorch.brokers import alpaca as alpaca_mod
from quantorch.brokers.alpaca import PAPER_URL, AlpacaBroker, BrokerUnavailableError
from quantorch.errors import QuantorchError, RetryableError, UserInputError
from quantorch.kernel.execution import Order, client_order_id
from quantorch.redact import redact
from quantorch.store import Store, repository

ACCOUNT = "paper"
DECIDED = pd.Timestamp("2022-12-27")
SESSION = pd.Timestamp("2022-12-28")
SUBMITTED_AT = "2022-12-27T21:30:05.118203Z"  # 16:30 New York, after the close
OPEN_AT = "2022-12-28T14:30:00.611532Z"  # 09:30 New York
KEY, SECRET = "PKPLANTEDKEY7Q2ZLX3V", "planted-secret-Z9x8C7v6B5n4M3q2W1e0RtYu"
ASSET_IDS = {  # Alpaca's asset ids of the symbols
    "AAPL": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
    "MSFT": "b6d1aa75-5c9c-4353-a305-9e2caa1925ab",
    "JNJ": "8ccae427-5dd0-45b3-b5fe-7ba5e422c766",
}
EXCHANGES = {"AAPL": "NASDAQ", "MSFT": "NASDAQ", "JNJ": "NYSE"}

URL_ORDERS = f"{PAPER_URL}/v2/orders"
URL_BY_CLIENT_ID = f"{PAPER_URL}/v2/orders:by_client_order_id"
URL_FILLS = f"{PAPER_URL}/v2/account/activities/FILL"
URL_POSITIONS = f"{PAPER_URL}/v2/positions"
URL_ACCOUNT = f"{PAPER_URL}/v2/account"


# ---- recorded-shape payloads --------------------------------------------------------------------


def alpaca_order(cid: str, symbol: str, side: str, qty: float, *, status: str = "accepted",
                 filled_qty: float = 0.0, filled_avg_price: float | None = None,
                 submitted_at: str = SUBMITTED_AT, filled_at: str | None = None) -> dict:
    """An order as ``POST /v2/orders`` and ``GET /v2/orders`` answer it (a simple DAY market
    order; Alpaca sends ``order_class: ""`` for simple orders)."""
    return {
        "id": order_uuid(cid),
        "client_order_id": cid,
        "created_at": submitted_at,
        "updated_at": filled_at or submitted_at,
        "submitted_at": submitted_at,
        "filled_at": filled_at if status == "filled" else None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": ASSET_IDS[symbol],
        "symbol": symbol,
        "asset_class": "us_equity",
        "notional": None,
        "qty": f"{qty:g}",
        "filled_qty": f"{filled_qty:g}",
        "filled_avg_price": None if filled_avg_price is None else f"{filled_avg_price:.4f}",
        "order_class": "",
        "order_type": "market",
        "type": "market",
        "side": side,
        "position_intent": "buy_to_open" if side == "buy" else "sell_to_close",
        "time_in_force": "day",
        "limit_price": None,
        "stop_price": None,
        "status": status,
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
        "subtag": None,
        "source": None,
        "expires_at": "2022-12-28T21:00:00Z",
    }


def order_uuid(cid: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-order/{cid}"))


def fill_activity(cid: str, symbol: str, side: str, qty: float, price: float, *, cum_qty: float,
                  leaves_qty: float, at: str = OPEN_AT, n: int = 0) -> dict:
    """One execution as ``GET /v2/account/activities/FILL`` answers it."""
    stamp = pd.Timestamp(at).strftime("%Y%m%d%H%M%S%f")[:17]
    return {
        "id": f"{stamp}::{uuid.uuid5(uuid.NAMESPACE_URL, f'fill/{cid}/{n}')}",
        "activity_type": "FILL",
        "transaction_time": at,
        "type": "fill" if leaves_qty == 0 else "partial_fill",
        "price": f"{price:.4f}",
        "qty": f"{qty:g}",
        "side": side,
        "symbol": symbol,
        "leaves_qty": f"{leaves_qty:g}",
        "order_id": order_uuid(cid),
        "cum_qty": f"{cum_qty:g}",
        "order_status": "filled" if leaves_qty == 0 else "partially_filled",
    }


def position(symbol: str, qty: float, side: str, price: float) -> dict:
    """An open position as ``GET /v2/positions`` answers it (a short has a negative qty)."""
    value = qty * price
    return {
        "asset_id": ASSET_IDS[symbol],
        "symbol": symbol,
        "exchange": EXCHANGES[symbol],
        "asset_class": "us_equity",
        "asset_marginable": True,
        "qty": f"{qty:g}",
        "avg_entry_price": f"{price:.4f}",
        "side": side,
        "market_value": f"{value:.4f}",
        "cost_basis": f"{value:.4f}",
        "unrealized_pl": "0",
        "unrealized_plpc": "0",
        "unrealized_intraday_pl": "0",
        "unrealized_intraday_plpc": "0",
        "current_price": f"{price:.4f}",
        "lastday_price": f"{price:.4f}",
        "change_today": "0",
        "qty_available": f"{qty:g}",
    }


def trade_account(cash: str) -> dict:
    """The account as ``GET /v2/account`` answers it (a paper account)."""
    return {
        "id": "e6fe16f3-64a4-4921-8928-cadf02f92f98",
        "admin_configurations": {},
        "user_configurations": None,
        "account_number": "PA3X0ZL9QF2B",
        "status": "ACTIVE",
        "crypto_status": "ACTIVE",
        "options_approved_level": 2,
        "options_trading_level": 2,
        "currency": "USD",
        "buying_power": "197321.76",
        "regt_buying_power": "197321.76",
        "daytrading_buying_power": "0",
        "effective_buying_power": "197321.76",
        "non_marginable_buying_power": "98660.88",
        "options_buying_power": "98660.88",
        "bod_dtbp": "0",
        "cash": cash,
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "portfolio_value": "100000",
        "pattern_day_trader": False,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "created_at": "2022-11-30T15:28:46.011826Z",
        "trade_suspended_by_user": False,
        "multiplier": "2",
        "shorting_enabled": True,
        "equity": "100000",
        "last_equity": "100000",
        "long_market_value": "1339.1200",
        "short_market_value": "-718.3800",
        "position_market_value": "2057.5",
        "initial_margin": "1028.75",
        "maintenance_margin": "617.25",
        "last_maintenance_margin": "0",
        "sma": "100000",
        "daytrade_count": 0,
        "balance_asof": "2022-12-27",
        "crypto_tier": 1,
        "intraday_adjustments": "0",
        "pending_reg_taf_fees": "0",
    }


def error(code: int, message: str, **extra) -> dict:
    """Alpaca's error body: ``{"code": ..., "message": ...}`` (and extra fields on some)."""
    return {"code": code, "message": message, **extra}


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    for alias in ("ALPACA_API_KEY_ID", "ALPACA_API_SECRET_KEY"):
        monkeypatch.delenv(alias, raising=False)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The retry waits, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(alpaca_mod, "_sleep", waits.append)
    return waits


@pytest.fixture
def broker(keys, sleeps) -> AlpacaBroker:
    return AlpacaBroker(ACCOUNT)


@pytest.fixture
def http():
    with requests_mock.Mocker() as mocker:  # anything not registered fails: no real HTTP
        yield mocker


@pytest.fixture(scope="module")
def closes(sp500_closes) -> pd.DataFrame:
    return sp500_closes.loc[[DECIDED, SESSION], ["AAPL", "MSFT", "JNJ"]]


def an_order(ticker: str, side: str, quantity: float, closes: pd.DataFrame,
             account: str = ACCOUNT) -> Order:
    return Order(
        client_order_id=client_order_id(account, DECIDED, ticker), ticker=ticker, side=side,
        quantity=quantity, decision_session=DECIDED, target_weight=0.05,
        reference_price=float(closes.loc[DECIDED, ticker]),
    )


def posted(mocker) -> list[dict]:
    return [r.json() for r in mocker.request_history if r.method == "POST"]


# ---- orders ---------------------------------------------------------------------------------------


def test_submit_sends_one_day_market_order_per_order(broker, http, closes):
    orders = [an_order("AAPL", "buy", 10.257, closes), an_order("JNJ", "sell", 3.0, closes)]
    http.post(URL_ORDERS, [
        {"json": alpaca_order(o.client_order_id, o.ticker, o.side, o.quantity)} for o in orders
    ])

    acks = broker.submit(orders, run_id="cycle-1")

    assert acks == [
        OrderAck(o.client_order_id, "accepted", broker_order_id=order_uuid(o.client_order_id))
        for o in orders
    ]
    bodies = posted(http)
    assert bodies == [
        {"symbol": "AAPL", "qty": 10.257, "side": "buy", "type": "market",
         "time_in_force": "day", "client_order_id": "paper-20221227-AAPL-0"},
        {"symbol": "JNJ", "qty": 3.0, "side": "sell", "type": "market",
         "time_in_force": "day", "client_order_id": "paper-20221227-JNJ-0"},
    ]
    first = http.request_history[0]
    assert first.headers["APCA-API-KEY-ID"] == KEY  # the keys came from the environment
    assert first.headers["APCA-API-SECRET-KEY"] == SECRET
    assert first.timeout == broker.timeout_s  # alpaca-py sets none: the adapter does


def test_quantity_is_sent_at_alpacas_nine_decimals(broker, http, closes):
    order = an_order("AAPL", "buy", 1 / 3, closes)
    http.post(URL_ORDERS, json=alpaca_order(order.client_order_id, "AAPL", "buy", 1 / 3))
    broker.submit([order])
    assert posted(http)[0]["qty"] == 0.333333333


def test_a_duplicate_is_adopted_and_never_sent_twice(broker, http, closes):
    order = an_order("AAPL", "buy", 10.0, closes)
    http.post(URL_ORDERS, status_code=422, json=error(40010001, "client_order_id must be unique"))
    http.get(URL_BY_CLIENT_ID, json=alpaca_order(
        order.client_order_id, "AAPL", "buy", 10.0, status="filled", filled_qty=10.0,
        filled_avg_price=131.02, filled_at=OPEN_AT))

    [ack] = broker.submit([order])

    assert ack == OrderAck(order.client_order_id, "filled",
                           broker_order_id=order_uuid(order.client_order_id),
                           filled_quantity=10.0)
    assert [r.method for r in http.request_history] == ["POST", "GET"]
    lookup = http.request_history[1]
    assert parse_qs(urlsplit(lookup.url).query) == {"client_order_id": [order.client_order_id]}


def test_a_timed_out_post_that_reached_alpaca_is_adopted_on_the_retry(broker, http, closes,
                                                                    sleeps):
    order = an_order("MSFT", "buy", 2.5, closes)
    http.post(URL_ORDERS, [
        {"exc": requests.exceptions.ReadTimeout("read timed out")},
        {"status_code": 422, "json": error(40010001, "client_order_id must be unique")},
    ])
    http.get(URL_BY_CLIENT_ID, json=alpaca_order(order.client_order_id, "MSFT", "buy", 2.5))

    [ack] = broker.submit([order])

    assert ack.status == "accepted" and ack.broker_order_id == order_uuid(order.client_order_id)
    assert len(posted(http)) == 2 and sleeps == [0.5]


def test_a_rejection_is_an_ack_and_the_other_orders_still_go(broker, http, closes):
    orders = [an_order("AAPL", "buy", 800.0, closes), an_order("MSFT", "buy", 0.5, closes),
              an_order("JNJ", "buy", 4.0, closes)]

    def answer(request, context):
        body = request.json()
        if body["symbol"] == "AAPL":
            context.status_code = 403
            return error(40310000, "insufficient buying power", buying_power="98660.88",
                         cost_basis="104816")
        if body["symbol"] == "MSFT":
            context.status_code = 422
            return error(42210000, "fractional orders are not supported for this asset")
        return alpaca_order(body["client_order_id"], body["symbol"], "buy", body["qty"],
                            status="pending_new")

    http.post(URL_ORDERS, json=answer)

    acks = broker.submit(orders)

    assert [a.status for a in acks] == ["rejected", "rejected", "accepted"]
    assert acks[0].reason == "HTTP 403: insufficient buying power"
    assert acks[1].reason == "HTTP 422: fractional orders are not supported for this asset"
    assert [b["symbol"] for b in posted(http)] == ["AAPL", "MSFT", "JNJ"]


def test_refused_keys_stop_the_submission(broker, http, closes):
    http.post(URL_ORDERS, status_code=401, json=error(40110000, "request is not authorized"))
    with pytest.raises(UserInputError, match=r"HTTP 401.*APCA_API_KEY_ID"):
        broker.submit([an_order("AAPL", "buy", 1.0, closes), an_order("JNJ", "buy", 1.0, closes)])
    assert len(posted(http)) == 1


def test_an_unknown_order_is_none(broker, http):
    http.get(URL_BY_CLIENT_ID, status_code=404, json=error(40410000, "order not found"))
    assert broker.order("paper-20221227-AAPL-0") is None


def test_order_reports_alpacas_state(broker, http, closes):
    order = an_order("JNJ", "sell", 3.0, closes)
    http.get(URL_BY_CLIENT_ID, json=alpaca_order(
        order.client_order_id, "JNJ", "sell", 3.0, status="expired", filled_qty=1.0))
    ack = broker.order(order.client_order_id)
    assert ack == OrderAck(order.client_order_id, "partially_filled",
                           broker_order_id=order_uuid(order.client_order_id),
                           filled_quantity=1.0, reason="1 of 3 filled, the rest expired")


@pytest.mark.parametrize(("status", "filled", "expected"), [
    ("new", 0, "accepted"), ("accepted", 0, "accepted"), ("pending_new", 0, "accepted"),
    ("accepted_for_bidding", 0, "accepted"), ("held", 0, "accepted"),
    ("partially_filled", 4, "partially_filled"), ("filled", 10, "filled"),
    ("done_for_day", 0, "expired"), ("done_for_day", 4, "partially_filled"),
    ("done_for_day", 10, "filled"), ("calculated", 10, "filled"),
    ("canceled", 0, "cancelled"), ("canceled", 4, "partially_filled"),
    ("expired", 0, "expired"), ("expired", 4, "partially_filled"),
    ("replaced", 0, "cancelled"), ("pending_cancel", 0, "accepted"),
    ("rejected", 0, "rejected"), ("something_new", 0, "submitted"),
])
def test_status_mapping(status, filled, expected):
    assert alpaca_mod.alpaca_status(status, 10.0, float(filled))[0] == expected


# ---- fills ----------------------------------------------------------------------------------------


def test_settle_reports_a_partial_then_the_full_fill_with_stable_ids(broker, http, closes,
                                                                    tmp_path):
    order = an_order("AAPL", "buy", 10.0, closes)
    cid = order.client_order_id
    ref = float(closes.loc[SESSION, "AAPL"])
    first = fill_activity(cid, "AAPL", "buy", 4, ref * 1.0004, cum_qty=4, leaves_qty=6)
    second = fill_activity(cid, "AAPL", "buy", 6, ref * 1.0010, cum_qty=10, leaves_qty=0,
                           at="2022-12-28T14:30:02.083113Z", n=1)
    others = [  # another quantorch account's order and a manual one: not this account's
        alpaca_order(client_order_id("other", DECIDED, "MSFT"), "MSFT", "buy", 1.0,
                     status="filled", filled_qty=1.0, filled_avg_price=236.0, filled_at=OPEN_AT),
        alpaca_order("web-3f1c2a", "JNJ", "buy", 1.0, status="filled", filled_qty=1.0,
                     filled_avg_price=177.1, filled_at=OPEN_AT),
    ]
    other_fills = [fill_activity(o["client_order_id"], o["symbol"], "buy", 1, 200.0,
                                 cum_qty=1, leaves_qty=0) for o in others]
    tickers = ["AAPL", "MSFT", "JNJ"]
    reference = closes.loc[SESSION, tickers].to_numpy()
    store = Store(tmp_path / "q.duckdb")
    store.migrate()
    with store.transaction() as con:
        repository.insert_order_intents(con, ACCOUNT, [order], broker="alpaca")

    def settle_and_store() -> tuple[list, int]:
        fills = broker.settle(SESSION, tickers, reference, reference, run_id="cycle-2")
        with store.transaction() as con:
            return fills, repository.insert_broker_fills(con, ACCOUNT, fills, run_id="cycle-2")

    http.get(URL_ORDERS, json=[*others, alpaca_order(
        cid, "AAPL", "buy", 10.0, status="partially_filled", filled_qty=4.0,
        filled_avg_price=ref * 1.0004)])
    http.get(URL_FILLS, json=[other_fills[0], first, other_fills[1]])
    partial, new = settle_and_store()

    assert new == 1 and [f.fill_id for f in partial] == [first["id"]]
    [fill] = partial
    assert (fill.client_order_id, fill.ticker, fill.side, fill.quantity) == (cid, "AAPL", "buy", 4)
    assert fill.fill_price == pytest.approx(ref * 1.0004, abs=1e-4)
    assert fill.notional == round(4 * fill.fill_price, 2)  # booked to the cent, as Alpaca does
    assert fill.fees == 0.0
    assert fill.slippage_cost == pytest.approx(4 * (fill.fill_price - ref))
    assert (fill.decision_session, fill.fill_session) == (DECIDED, SESSION)

    http.get(URL_ORDERS, json=[*others, alpaca_order(
        cid, "AAPL", "buy", 10.0, status="filled", filled_qty=10.0,
        filled_avg_price=ref * 1.00076, filled_at="2022-12-28T14:30:02.083113Z")])
    http.get(URL_FILLS, json=[other_fills[0], first, other_fills[1], second])
    full, new = settle_and_store()
    again, new_again = settle_and_store()

    assert [f.fill_id for f in full] == [first["id"], second["id"]]
    assert full[0] == fill and again == full
    assert (new, new_again) == (1, 0)
    with store.connect(read_only=True) as con:
        stored = repository.fills_for(con, ACCOUNT)
        [row] = repository.orders_for(con, ACCOUNT).itertuples()
    assert sorted(stored["broker_fill_id"]) == sorted([first["id"], second["id"]])
    assert row.filled_quantity == 10.0

    listing = next(r for r in http.request_history if r.path == "/v2/orders")
    query = parse_qs(urlsplit(listing.url).query)
    assert query["status"] == ["all"] and query["direction"] == ["asc"]
    assert query["limit"] == ["500"]
    assert pd.Timestamp(query["after"][0]) == pd.Timestamp("2022-12-18", tz="UTC")
    activities = next(r for r in http.request_history if r.path.endswith("/activities/fill"))
    assert parse_qs(urlsplit(activities.url).query)["direction"] == ["asc"]


def test_settle_skips_orders_decided_at_the_session_and_fills_after_it(broker, http, closes):
    before = an_order("MSFT", "sell", 2.0, closes)
    today = client_order_id(ACCOUNT, SESSION, "AAPL")
    ref = float(closes.loc[SESSION, "MSFT"])
    http.get(URL_ORDERS, json=[
        alpaca_order(before.client_order_id, "MSFT", "sell", 2.0, status="filled",
                     filled_qty=2.0, filled_avg_price=ref, filled_at=OPEN_AT),
        alpaca_order(today, "AAPL", "buy", 1.0, submitted_at="2022-12-28T21:30:01Z"),
    ])
    http.get(URL_FILLS, json=[
        fill_activity(before.client_order_id, "MSFT", "sell", 2, ref * 0.9995, cum_qty=2,
                      leaves_qty=0),
        fill_activity(today, "AAPL", "buy", 1, 130.0, cum_qty=1, leaves_qty=0,
                      at="2022-12-29T14:30:00.2Z"),
    ])
    [fill] = broker.settle(SESSION, ["MSFT"], np.array([ref]), np.array([ref]))
    assert (fill.client_order_id, fill.side, fill.quantity) == (before.client_order_id, "sell", 2)
    assert fill.slippage_cost == pytest.approx(2 * ref * 0.0005, rel=1e-3)
    # the session before: the fill at the 28th's open is not reported yet
    assert broker.settle(DECIDED, ["MSFT"], np.array([ref]), np.array([ref])) == []


def test_settle_pages_through_the_activities(broker, http, closes):
    order = an_order("AAPL", "buy", 150.0, closes)
    cid = order.client_order_id
    executions = [fill_activity(cid, "AAPL", "buy", 1, 130.0 + k / 100, cum_qty=k + 1,
                                leaves_qty=149 - k, n=k) for k in range(150)]
    http.get(URL_ORDERS, json=[alpaca_order(cid, "AAPL", "buy", 150.0, status="filled",
                                            filled_qty=150.0, filled_avg_price=130.75,
                                            filled_at=OPEN_AT)])

    def page(request, context):
        token = parse_qs(urlsplit(request.url).query).get("page_token", [None])[0]
        start = 0 if token is None else [a["id"] for a in executions].index(token) + 1
        return executions[start:start + 100]

    http.get(URL_FILLS, json=page)
    fills = broker.settle(SESSION, ["AAPL"], np.array([130.0]), np.array([130.0]))
    assert len({f.fill_id for f in fills}) == 150
    assert sum(f.quantity for f in fills) == 150


# ---- the account ----------------------------------------------------------------------------------


def test_positions_and_cash(broker, http):
    http.get(URL_POSITIONS, json=[position("AAPL", 10.257, "long", 130.55),
                                  position("MSFT", -3, "short", 239.46)])
    http.get(URL_ACCOUNT, json=trade_account("98660.8812"))
    assert broker.shares() == {"AAPL": 10.257, "MSFT": -3.0}
    assert broker.cash() == 98660.8812


# ---- retries ----------------------------------------------------------------------------------------


def test_a_rate_limit_is_retried_after_the_wait_alpaca_asks(broker, http, sleeps):
    http.get(URL_ACCOUNT, [
        {"status_code": 429, "json": error(42910000, "rate limit exceeded"),
         "headers": {"Retry-After": "2"}},
        {"status_code": 429, "text": "rate limit exceeded"},
        {"json": trade_account("1000")},
    ])
    assert broker.cash() == 1000.0
    assert http.call_count == 3 and sleeps == [2.0, 1.0]  # Retry-After, then the backoff


def test_server_errors_past_the_retries_are_retryable(broker, http, sleeps):
    http.get(URL_POSITIONS, status_code=500, json=error(50010000, "internal server error"))
    with pytest.raises(BrokerUnavailableError) as caught:
        broker.shares()
    assert isinstance(caught.value, RetryableError) and caught.value.exit_code == 3
    assert http.call_count == broker.retries + 1 and sleeps == [0.5, 1.0, 2.0]
    assert "\n" not in str(caught.value) and "HTTP 500" in str(caught.value)


def test_a_timeout_is_retryable_and_sends_nothing_more(broker, http, closes, sleeps):
    http.post(URL_ORDERS, exc=requests.exceptions.ConnectTimeout("connect timed out"))
    with pytest.raises(RetryableError, match="ConnectTimeout") as caught:
        broker.submit([an_order("AAPL", "buy", 1.0, closes), an_order("JNJ", "buy", 1.0, closes)])
    assert isinstance(caught.value, BrokerUnavailableError)
    assert [b["symbol"] for b in posted(http)] == ["AAPL"] * (broker.retries + 1)


def test_a_connection_error_is_retryable(broker, http):
    http.get(URL_ACCOUNT, exc=requests.exceptions.ConnectionError("connection refused"))
    with pytest.raises(BrokerUnavailableError, match="ConnectionError"):
        broker.cash()


def test_retries_are_configurable(keys, http, sleeps):
    broker = AlpacaBroker(ACCOUNT, retries=1, backoff_s=0.25, max_wait_s=1.0)
    http.get(URL_ACCOUNT, status_code=503, headers={"Retry-After": "120"},
             text="<html>Service Unavailable</html>")
    with pytest.raises(BrokerUnavailableError):
        broker.cash()
    assert http.call_count == 2 and sleeps == [1.0]  # Retry-After capped at max_wait_s


# ---- keys and secrets -------------------------------------------------------------------------------


def test_keys_come_from_the_environment_only(monkeypatch, http):
    for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY_ID",
                 "ALPACA_API_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserInputError, match=r"\$APCA_API_KEY_ID or \$ALPACA_API_KEY_ID"):
        AlpacaBroker(ACCOUNT)
    monkeypatch.setenv("ALPACA_API_KEY_ID", KEY)
    with pytest.raises(UserInputError, match=r"\$APCA_API_SECRET_KEY"):
        AlpacaBroker(ACCOUNT)
    monkeypatch.setenv("ALPACA_API_SECRET_KEY", SECRET)
    http.get(URL_ACCOUNT, json=trade_account("5"))
    assert AlpacaBroker(ACCOUNT).cash() == 5.0  # the ALPACA_ spellings are accepted
    assert http.last_request.headers["APCA-API-KEY-ID"] == KEY

    with pytest.raises(UserInputError, match=r"\$MY_PAPER_KEY, which is not set") as caught:
        AlpacaBroker(ACCOUNT, key_env="MY_PAPER_KEY", secret_env="MY_PAPER_SECRET")
    assert "ALPACA_API_KEY_ID" not in str(caught.value)


def test_without_the_extra_one_clear_error(keys, monkeypatch):
    monkeypatch.setitem(sys.modules, "alpaca.trading.client", None)  # import fails
    with pytest.raises(UserInputError) as caught:
        AlpacaBroker(ACCOUNT)
    assert str(caught.value) == (
        "the alpaca broker needs the alpaca extra: pip install 'quantorch[alpaca]'")


def test_the_live_endpoint_is_refused(keys):
    with pytest.raises(UserInputError, match="paper accounts only"):
        AlpacaBroker(ACCOUNT, base_url="https://api.alpaca.markets")
    assert AlpacaBroker(ACCOUNT, base_url=f"{PAPER_URL}/v2/").base_url == PAPER_URL


def test_keys_appear_in_no_message_repr_or_log(monkeypatch, http, sleeps, closes, caplog):
    """Plant keys under custom variable names (so only ``register_secret`` can mask them), make
    Alpaca echo them in every error body (a leaky proxy), and walk every error path."""
    key, secret = "PKLEAKCHECK0000PLANTED", "leak-check-secret-PLANTED-0123456789abcdef"
    monkeypatch.setenv("QT_ALPACA_KEY", key)
    monkeypatch.setenv("QT_ALPACA_SECRET", secret)
    caplog.set_level(logging.DEBUG)
    broker = AlpacaBroker(ACCOUNT, key_env="QT_ALPACA_KEY", secret_env="QT_ALPACA_SECRET")
    echo = f"APCA-API-KEY-ID: {key}, APCA-API-SECRET-KEY={secret} key {key} secret {secret}"
    orders = [an_order("AAPL", "buy", 1.0, closes)]
    texts: list[str] = [repr(broker), str(vars(broker).get("_client"))]

    def expect_error(call, kind=QuantorchError):
        with pytest.raises(kind) as caught:
            call()
        exc = caught.value
        texts.append(str(exc))
        texts.append(repr(exc))
        # the CLI prints tracebacks (with --debug) through redact: so must they come out clean
        texts.append(redact("".join(traceback.format_exception(exc))))

    http.post(URL_ORDERS, status_code=403, json=error(40310000, f"forbidden {echo}"))
    [ack] = broker.submit(orders)
    texts.append(repr(ack))
    assert ack.status == "rejected"
    http.post(URL_ORDERS, status_code=401, json=error(40110000, echo))
    expect_error(lambda: broker.submit(orders), UserInputError)
    http.post(URL_ORDERS, status_code=500, text=echo)
    expect_error(lambda: broker.submit(orders), BrokerUnavailableError)
    http.post(URL_ORDERS, exc=requests.exceptions.ConnectTimeout(echo))
    expect_error(lambda: broker.submit(orders), BrokerUnavailableError)
    http.get(URL_BY_CLIENT_ID, status_code=400, json=error(40010000, echo))
    expect_error(lambda: broker.order("paper-20221227-AAPL-0"))
    http.get(URL_ACCOUNT, status_code=403, json=error(40310000, echo))
    expect_error(broker.cash, UserInputError)
    http.get(URL_POSITIONS, status_code=429, text=echo)
    expect_error(broker.shares, BrokerUnavailableError)
    http.get(URL_ORDERS, json=[{"id": "not-a-uuid", "note": echo}])
    expect_error(lambda: broker.settle(SESSION, ["AAPL"], np.array([1.0]), np.array([1.0])))
    http.get(URL_ORDERS, exc=requests.exceptions.ReadTimeout(echo))
    expect_error(lambda: broker.settle(SESSION, ["AAPL"], np.array([1.0]), np.array([1.0])),
                 BrokerUnavailableError)

    texts.append(caplog.text)
    texts.extend(json.dumps(r.__dict__, default=str) for r in caplog.records)
    leaks = [t for t in texts if key in t or secret in t]
    assert not leaks, leaks
    assert len(texts) > 20
