"""Live Alpaca paper account: opt-in, runs only with paper keys in ``APCA_API_KEY_ID`` and
``APCA_API_SECRET_KEY`` (and the paper endpoint reachable). The same code is tested offline in
tests/integration/test_alpaca_broker.py against recorded-shape HTTP.

It reads the account and its positions, then sends one tiny DAY market buy (0.01 AAPL) while
the market is closed, checks that a second submission adopts it instead of sending it again,
and cancels it. It never runs while the market is open (the order would fill).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import socket
import time

import pandas as pd
import pytest

from quantorch.kernel.execution import Order, client_order_id

pytestmark = pytest.mark.online

ACCOUNT = "qtlive"  # its client order ids never clash with a real quantorch account's


@pytest.fixture(scope="module")
def broker():
    missing = [n for n in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY") if not os.environ.get(n)]
    if missing:
        pytest.skip(f"set {' and '.join(missing)} (Alpaca paper keys) to run the live test")
    pytest.importorskip("alpaca", reason="needs the alpaca extra: pip install 'quantorch[alpaca]'")
    try:
        socket.create_connection(("paper-api.alpaca.markets", 443), timeout=5).close()
    except OSError:
        pytest.skip("paper-api.alpaca.markets is not reachable from this machine (offline)")
    from quantorch.brokers.alpaca import AlpacaBroker

    return AlpacaBroker(ACCOUNT)


def test_account_and_positions(broker):
    cash = broker.cash()
    assert isinstance(cash, float)
    shares = broker.shares()
    assert all(isinstance(t, str) and q != 0 for t, q in shares.items())
    assert "APCA" not in repr(broker) and os.environ["APCA_API_KEY_ID"] not in repr(broker)


def test_an_unknown_order_is_none(broker):
    assert broker.order(client_order_id(ACCOUNT, "2000-01-03", "NOPE", 999_999_999)) is None


def test_a_tiny_order_is_sent_once_and_cancelled(broker):
    from alpaca.trading.client import TradingClient

    client = TradingClient(os.environ["APCA_API_KEY_ID"], os.environ["APCA_API_SECRET_KEY"],
                           paper=True)
    if client.get_clock().is_open:
        pytest.skip("the market is open: a market order would fill instead of waiting")
    today = pd.Timestamp(dt.date.today())
    order = Order(
        client_order_id=client_order_id(ACCOUNT, today, "AAPL", random.randrange(10**9)),
        ticker="AAPL", side="buy", quantity=0.01, decision_session=today, target_weight=0.0,
        reference_price=float("nan"),
    )
    [ack] = broker.submit([order])
    try:
        assert ack.status == "accepted", ack
        assert ack.broker_order_id
        [again] = broker.submit([order])  # the duplicate is adopted, not sent twice
        assert again.broker_order_id == ack.broker_order_id
        assert broker.order(order.client_order_id).broker_order_id == ack.broker_order_id
    finally:
        if ack.broker_order_id:
            client.cancel_order_by_id(ack.broker_order_id)
    for _ in range(20):  # a cancel is asynchronous: pending_cancel, then canceled
        state = broker.order(order.client_order_id)
        if state is not None and state.status == "cancelled":
            break
        time.sleep(0.5)
    assert state is not None and state.status == "cancelled", state
