"""The broker port: where the kernel's orders go and where fills come from.

A broker takes :class:`~quantorch.kernel.execution.Order` s carrying deterministic client order
ids (submitting one twice does nothing: the second answer is the first order's state), reports
:class:`~quantorch.kernel.execution.Fill` s (each with the broker's own fill id, so it is stored
once), and answers what the account holds: shares per ticker and cash. The built-in
:class:`~quantorch.brokers.simulated.SimulatedBroker` fills with exactly the backtest engine's
rules; real brokers' paper APIs (:mod:`quantorch.brokers.alpaca`) are adapters behind the same
protocol.

The paper cycle records whatever a broker answers (acknowledgements, fills) in the store's
``orders``, ``broker_fills`` and ``cash_ledger``; those writes are idempotent, so a broker that
keeps its state in the same tables (the simulator) and one that does not (Alpaca) are driven the
same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from quantorch.kernel.execution import Fill, Order

__all__ = ["BROKERS", "Broker", "OrderAck"]

#: Broker names as ``--broker`` and the ``paper:`` config spell them.
BROKERS = ("sim", "alpaca")


@dataclass(frozen=True, slots=True)
class OrderAck:
    """What a broker says about one order.

    ``status`` is one of the ``orders.status`` values (submitted, accepted, partially_filled,
    filled, rejected, cancelled, expired); ``reason`` says why an order was rejected or
    cancelled.
    """

    client_order_id: str
    status: str
    broker_order_id: str | None = None
    filled_quantity: float = 0.0
    reason: str | None = None


class Broker(Protocol):
    """What the kernel needs from a broker (see the module docstring)."""

    name: str
    account: str

    def submit(self, orders: Sequence[Order], *, run_id: str | None = None) -> list[OrderAck]:
        """Send ``orders``; an order whose client order id the broker already knows is not
        sent again (its acknowledgement is the known order's state)."""
        ...

    def order(self, client_order_id: str) -> OrderAck | None:
        """What the broker knows of one order, or None if it never got it."""
        ...

    def settle(
        self,
        session: pd.Timestamp,
        tickers: Sequence[str],
        reference_prices: np.ndarray,
        marks: np.ndarray,
        *,
        run_id: str | None = None,
    ) -> list[Fill]:
        """The fills of the orders decided before ``session`` that executed at it (the
        simulator executes them now, at the reference prices; a real broker reports what it
        filled). Calling it again for the same session reports the same fills."""
        ...

    def shares(self) -> dict[str, float]:
        """Signed shares held per ticker, as the broker reports them."""
        ...

    def cash(self) -> float:
        """Cash of the account (USD), as the broker reports it."""
        ...
