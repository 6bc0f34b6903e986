"""The broker port: where the kernel's orders go and where fills come from.

A broker takes :class:`~quantorch.kernel.execution.Order` s carrying deterministic client order
ids (submitting one twice does nothing), reports :class:`~quantorch.kernel.execution.Fill` s
(each stored once, keyed by the broker's fill id), and answers what the account holds: shares
per ticker and cash. The built-in :class:`~quantorch.brokers.simulated.SimulatedBroker` fills
with exactly the backtest engine's rules; real brokers' paper APIs are adapters behind the same
protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pandas as pd

from quantorch.kernel.execution import Fill, Order

__all__ = ["Broker"]


class Broker(Protocol):
    """What the kernel needs from a broker (see the module docstring)."""

    name: str
    account: str

    def submit(self, orders: Sequence[Order], *, run_id: str | None = None) -> int:
        """Send ``orders``; returns how many were new (already known client order ids are not
        sent again)."""
        ...

    def order(self, client_order_id: str) -> dict | None:
        """What the broker knows of one order (status, filled quantity), or None."""
        ...

    def fills(self, session: pd.Timestamp | None = None) -> list[Fill]:
        """The account's fills (of one fill session, if given), in fill order."""
        ...

    def shares(self) -> dict[str, float]:
        """Signed shares held per ticker."""
        ...

    def cash(self) -> float:
        """Cash of the account (USD)."""
        ...
