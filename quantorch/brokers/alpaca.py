"""The Alpaca paper-trading adapter behind the broker port (needs ``quantorch[alpaca]``).

:class:`AlpacaBroker` sends the kernel's orders to an Alpaca **paper** account through alpaca-py's
``TradingClient`` and reads back what Alpaca did. It keeps no state of its own: everything it
reports (orders, fills, positions, cash) is asked of Alpaca each time, so the object can be
thrown away, or the process killed, between any two calls. See docs/brokers.md.

- **Orders.** One market order, time in force DAY, per :class:`~quantorch.kernel.execution.Order`,
  with the order's (fractional) quantity and its deterministic client order id. Submitted after
  the close, a DAY market order waits for the next session and executes at its open.
- **Duplicates.** Alpaca refuses a second order with a client order id it knows (HTTP 422,
  ``client_order_id must be unique``): the adapter then adopts the order Alpaca already has
  (``GET /v2/orders:by_client_order_id``) and reports its state. An order is never sent twice,
  whether the first try crashed, timed out or was answered.
- **Fills** come from the account activities (``GET /v2/account/activities/FILL``): one per
  execution, each with Alpaca's own activity id, which is the fill id (stable: a repeat reports
  the same fills, and the store keeps each once). The orders they belong to are found by listing
  the account's recent orders (``GET /v2/orders?status=all``) and keeping those whose client
  order id carries this account's prefix; the decision session is read from the id.
- **Errors.** HTTP 429 and 5xx, timeouts and connection errors are retried with exponential
  backoff (honouring ``Retry-After``); past the retries they raise
  :class:`BrokerUnavailableError` (a :class:`~quantorch.errors.RetryableError`, exit 3), so a
  cycle stops before it touches a position and is run again later. An order Alpaca refuses
  (403 insufficient buying power, a 422 other than the duplicate, ...) is a ``rejected``
  acknowledgement, not an exception, so the other orders still go.
- **Secrets.** The keys are read from environment variables only and registered with
  :func:`quantorch.redact.register_secret` at once; every message the adapter builds goes
  through :func:`~quantorch.redact.redact`, and no repr shows them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pydantic

from quantorch._http import retry_after_seconds
from quantorch.brokers import OrderAck
from quantorch.data.calendar import EXCHANGE_TZ
from quantorch.errors import QuantorchError, RetryableError, UserInputError
from quantorch.kernel.execution import Fill, Order, client_order_id
from quantorch.redact import redact, register_secret

__all__ = ["PAPER_URL", "AlpacaBroker", "BrokerUnavailableError", "alpaca_status"]

log = logging.getLogger(__name__)

#: Alpaca's paper trading endpoint (alpaca-py's ``BaseURL.TRADING_PAPER``).
PAPER_URL = "https://paper-api.alpaca.markets"
_LIVE_HOST = "api.alpaca.markets"
_KEY_ALIASES = {"APCA_API_KEY_ID": "ALPACA_API_KEY_ID",
                "APCA_API_SECRET_KEY": "ALPACA_API_SECRET_KEY"}
_MISSING_EXTRA = "the alpaca broker needs the alpaca extra: pip install 'quantorch[alpaca]'"
_DUPLICATE = "client_order_id must be unique"
#: Alpaca accepts at most 9 decimals of a share.
_QTY_DECIMALS = 9
_ORDERS_PAGE = 500  # Alpaca's maximum for GET /v2/orders
_ACTIVITIES_PAGE = 100  # and for GET /v2/account/activities
_REASON_CHARS = 200

# Alpaca statuses of an order that may still trade; "accepted" in quantorch's terms.
_LIVE = frozenset({
    "new", "accepted", "pending_new", "accepted_for_bidding", "pending_review", "held",
    "suspended", "stopped", "pending_cancel", "pending_replace", "calculated",
})  # fmt: skip

T = TypeVar("T")


class BrokerUnavailableError(RetryableError):
    """The broker did not answer (timeouts, connection errors, HTTP 429 or 5xx past the
    retries): nothing was decided from a partial answer; run the cycle again later."""


def alpaca_status(status: str, quantity: float, filled: float) -> tuple[str, str | None]:
    """Alpaca's order ``status`` in quantorch's terms (the ``orders.status`` values).

    Parameters
    ----------
    status
        Alpaca's status (``new``, ``filled``, ``canceled``, ...).
    quantity, filled
        The order's quantity and its filled quantity: an order that ended (cancelled, expired,
        done for the day) with part of it filled is ``partially_filled``, as the simulator
        reports a buy that ran out of cash.

    Returns
    -------
    tuple of (str, str or None)
        The status and, for one that did not fill in full, why.
    """
    status = str(status).lower()
    done = quantity > 0 and filled >= quantity * (1 - 1e-9)
    if status == "filled" or (status in ("calculated", "done_for_day") and done):
        return "filled", None
    if status == "partially_filled":
        return "partially_filled", None
    if status in _LIVE:
        return ("partially_filled", None) if filled > 0 else ("accepted", None)
    if status == "rejected":
        return "rejected", "rejected by Alpaca"
    ended = {"canceled": ("cancelled", "cancelled at Alpaca"),
             "replaced": ("cancelled", "replaced at Alpaca"),
             "expired": ("expired", "expired unfilled at the close"),
             "done_for_day": ("expired", "done for the day unfilled")}
    if status in ended:
        final, reason = ended[status]
        if filled > 0:
            return "partially_filled", f"{filled:g} of {quantity:g} filled, the rest {final}"
        return final, reason
    return "submitted", f"unknown Alpaca status {status!r}"


class AlpacaBroker:
    """An Alpaca paper account behind the broker port (see the module docstring).

    Parameters
    ----------
    account
        The quantorch account name: its client order ids start with it, and :meth:`settle`
        reports the fills of those orders only. Positions and cash are the whole Alpaca
        account's.
    key_env, secret_env
        The environment variables holding the API key id and secret (paper keys). With the
        default names, ``ALPACA_API_KEY_ID`` and ``ALPACA_API_SECRET_KEY`` are accepted too.
    base_url
        None: Alpaca's paper endpoint. Another URL (a proxy, a recorder) may be given; Alpaca's
        live endpoint is refused, quantorch trades paper accounts only.
    client
        An alpaca-py ``TradingClient`` to use as it is (the keys are then not read, and its own
        retry settings are left alone). None: one is built from the keys.
    retries
        Tries after the first for HTTP 429 and 5xx, timeouts and connection errors.
    backoff_s
        Wait before the first retry, doubled at each (a ``Retry-After`` header overrides it).
    max_wait_s
        The longest single wait, ``Retry-After`` included.
    timeout_s
        Connect and read timeout of each request (alpaca-py sets none).
    lookback_days
        How far before a session :meth:`settle` looks for the orders decided before it.
    """

    name = "alpaca"

    def __init__(
        self,
        account: str,
        *,
        key_env: str = "APCA_API_KEY_ID",
        secret_env: str = "APCA_API_SECRET_KEY",
        base_url: str | None = None,
        client: Any | None = None,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        timeout_s: float = 15.0,
        lookback_days: int = 10,
    ) -> None:
        if not account:
            raise UserInputError("the alpaca broker needs an account name")
        if retries < 0 or backoff_s < 0 or max_wait_s < 0 or timeout_s <= 0 or lookback_days < 1:
            raise UserInputError(
                "the alpaca broker needs retries >= 0, backoff_s >= 0, max_wait_s >= 0, "
                f"timeout_s > 0 and lookback_days >= 1, got {retries}, {backoff_s}, "
                f"{max_wait_s}, {timeout_s}, {lookback_days}")
        self.account = account
        self.key_env, self.secret_env = key_env, secret_env
        self.retries, self.backoff_s, self.max_wait_s = int(retries), backoff_s, max_wait_s
        self.timeout_s = timeout_s
        self.lookback_days = int(lookback_days)
        self.base_url = _paper_url(base_url)
        self._prefix = client_order_id(account, "2000-01-03", "X").split("-", 1)[0] + "-"
        self._client = client if client is not None else self._build_client()

    def __repr__(self) -> str:
        return f"AlpacaBroker(account={self.account!r}, base_url={self.base_url!r})"

    def _build_client(self) -> Any:
        trading = _alpaca("alpaca.trading.client")
        api_key = _read_key(self.key_env, "API key id")
        secret_key = _read_key(self.secret_env, "API secret key")
        client = trading.TradingClient(api_key, secret_key, paper=True,
                                       url_override=self.base_url)
        # alpaca-py retries 429 and 504 itself, 3 times 3 s apart, and sets no timeout: the
        # adapter does both (backoff, Retry-After, 5xx, timeouts), so switch its own off
        client._retry = 0
        client._session = _timeout_session(self.timeout_s)
        return client

    # ---- the account ----------------------------------------------------------------------

    def shares(self) -> dict[str, float]:
        """Signed shares per symbol of every open position (``GET /v2/positions``)."""
        positions = self._read("GET /v2/positions", self._client.get_all_positions)
        held: dict[str, float] = {}
        for position in positions:
            quantity = abs(_number(position.qty, "position qty"))
            side = getattr(position.side, "value", position.side)
            held[str(position.symbol)] = -quantity if str(side) == "short" else quantity
        return held

    def cash(self) -> float:
        """The account's cash in USD (``GET /v2/account``: ``cash``; negative on margin)."""
        account = self._read("GET /v2/account", self._client.get_account)
        return _number(account.cash, "account cash")

    # ---- orders ------------------------------------------------------------------------------

    def submit(self, orders: Sequence[Order], *, run_id: str | None = None) -> list[OrderAck]:
        """Send each order as a DAY market order; an order Alpaca already has (same client
        order id) is adopted, not sent again; one Alpaca refuses is acknowledged ``rejected``.

        Raises
        ------
        BrokerUnavailableError
            Alpaca did not answer past the retries; the orders sent before it stand (a rerun
            adopts them).
        UserInputError
            Alpaca refused the keys (HTTP 401).
        """
        if not orders:
            return []
        requests_mod, enums = _alpaca("alpaca.trading.requests"), _alpaca("alpaca.trading.enums")
        exceptions = _alpaca("alpaca.common.exceptions")
        acks = []
        for order in orders:
            quantity = round(float(order.quantity), _QTY_DECIMALS)
            if quantity <= 0:
                acks.append(OrderAck(order.client_order_id, "rejected", reason=(
                    f"{order.quantity!r} shares round to 0 at Alpaca's {_QTY_DECIMALS} decimals")))
                continue
            request = requests_mod.MarketOrderRequest(
                symbol=order.ticker, qty=quantity,
                side=enums.OrderSide.BUY if order.side == "buy" else enums.OrderSide.SELL,
                time_in_force=enums.TimeInForce.DAY, client_order_id=order.client_order_id,
            )
            try:
                placed = self._call("POST /v2/orders", self._client.submit_order, request)
            except exceptions.APIError as exc:
                if _status_code(exc) == 401:
                    raise self._refused("POST /v2/orders", exc) from exc
                if _status_code(exc) == 422 and _DUPLICATE in _message(exc).lower():
                    acks.append(self._adopt(order))
                    continue
                reason = _reason(exc)
                log.warning("%s", redact(f"Alpaca rejected order {order.client_order_id}: "
                                         f"{reason}"))
                acks.append(OrderAck(order.client_order_id, "rejected", reason=reason))
                continue
            acks.append(_ack(placed))
        return acks

    def _adopt(self, order: Order) -> OrderAck:
        """The state of the order Alpaca already has under ``order``'s client order id."""
        known = self.order(order.client_order_id)
        if known is None:  # refused as a duplicate, yet not found: say so, send nothing
            return OrderAck(order.client_order_id, "rejected", reason=(
                "Alpaca says the client order id is taken but does not find the order"))
        log.info("order %s was already at Alpaca (%s): adopted, not sent again",
                 order.client_order_id, known.status)
        return known

    def order(self, client_order_id: str) -> OrderAck | None:
        """What Alpaca knows of one order (``GET /v2/orders:by_client_order_id``), or None
        when it has none (HTTP 404)."""
        exceptions = _alpaca("alpaca.common.exceptions")
        what = "GET /v2/orders:by_client_order_id"
        try:
            found = self._call(what, self._client.get_order_by_client_id, client_order_id)
        except exceptions.APIError as exc:
            if _status_code(exc) == 404:
                return None
            raise self._refused(what, exc) from exc
        return _ack(found)

    # ---- fills -------------------------------------------------------------------------------

    def settle(
        self,
        session: pd.Timestamp,
        tickers: Sequence[str],
        reference_prices: np.ndarray,
        marks: np.ndarray,
        *,
        run_id: str | None = None,
    ) -> list[Fill]:
        """Every fill, executed on or before ``session`` (New York dates), of this account's
        orders decided in the ``lookback_days`` before ``session``.

        The fills are Alpaca's executions (``GET /v2/account/activities/FILL``), one per
        activity, ``fill_id`` = the activity id: a partly filled order reports one fill per
        execution, a repeat reports the same fills. ``slippage_cost`` is measured against
        ``reference_prices`` for the fills executed at ``session`` (0 for others, whose
        reference is not given); fees are 0 (Alpaca charges no commission). ``marks`` and
        ``run_id`` are not used: the adapter stores nothing.
        """
        session = pd.Timestamp(session).normalize()
        if session.tzinfo is not None:
            session = session.tz_localize(None)
        start = (session - pd.Timedelta(days=self.lookback_days)).tz_localize("UTC")
        ours = {}
        for placed in self._orders_since(start.to_pydatetime()):
            decided = self._decision_session(str(placed.client_order_id))
            if decided is not None and decided < session:
                ours[str(placed.id)] = (placed, decided)
        if not ours:
            return []
        prices = np.asarray(reference_prices, dtype=np.float64)
        reference = {str(t): float(p) for t, p in zip(tickers, prices, strict=True)}
        fills, executed = [], dict.fromkeys(ours, 0.0)
        for activity in self._fill_activities(start):
            order_id = str(activity.get("order_id", ""))
            if order_id not in ours:
                continue
            placed, decided = ours[order_id]
            executed[order_id] += abs(_number(activity.get("qty", 0), "fill qty"))
            fill = _fill(activity, placed, decided, session, reference)
            if fill is not None:
                fills.append(fill)
        for order_id, (placed, _) in ours.items():
            reported = _number(placed.filled_qty or 0, "filled_qty")
            if reported > executed[order_id] * (1 + 1e-9) + 1e-9:
                # the activity feed can trail the order by a moment: a later settle reports it
                log.warning("Alpaca order %s has %g shares filled but %g in its fill "
                            "activities: the rest is reported by a later settle",
                            placed.client_order_id, reported, executed[order_id])
        return sorted(fills, key=lambda f: (f.fill_session, f.client_order_id, f.fill_id))

    def _orders_since(self, start: dt.datetime) -> Iterator[Any]:
        requests_mod, enums = _alpaca("alpaca.trading.requests"), _alpaca("alpaca.trading.enums")
        common = _alpaca("alpaca.common.enums")
        seen: set[str] = set()
        after = start
        while True:
            page = self._read("GET /v2/orders", self._client.get_orders,
                              requests_mod.GetOrdersRequest(
                                  status=enums.QueryOrderStatus.ALL, after=after,
                                  direction=common.Sort.ASC, limit=_ORDERS_PAGE))
            new = [o for o in page if str(o.id) not in seen]
            seen.update(str(o.id) for o in new)
            yield from new
            if len(page) < _ORDERS_PAGE or not new:
                return
            # ``after`` is exclusive: step back a microsecond so ties at the edge are not lost
            after = page[-1].submitted_at - dt.timedelta(microseconds=1)

    def _fill_activities(self, start: pd.Timestamp) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"after": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                  "direction": "asc", "page_size": _ACTIVITIES_PAGE}
        while True:
            page = self._read("GET /v2/account/activities/FILL", self._client.get,
                              "/account/activities/FILL", params)
            if not isinstance(page, list) or not page:
                return
            yield from (a for a in page if isinstance(a, dict))
            if len(page) < _ACTIVITIES_PAGE or not isinstance(page[-1], dict):
                return
            params = {**params, "page_token": page[-1].get("id")}

    def _decision_session(self, client_id: str) -> pd.Timestamp | None:
        """The decision session in one of this account's client order ids
        (``account-YYYYMMDD-ticker-seq``), None for another account's or a manual order."""
        if not client_id.startswith(self._prefix):
            return None
        stamp = client_id[len(self._prefix):].split("-", 1)[0]
        try:
            return pd.Timestamp(dt.datetime.strptime(stamp, "%Y%m%d"))
        except ValueError:
            return None

    # ---- HTTP: retries and translation -------------------------------------------------------

    def _read(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """A call whose every refusal is an error (reads of the account)."""
        exceptions = _alpaca("alpaca.common.exceptions")
        try:
            return self._call(what, call, *args)
        except exceptions.APIError as exc:
            raise self._refused(what, exc) from exc

    def _call(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, retried on HTTP 429 and 5xx, timeouts and connection errors.

        Raises :class:`BrokerUnavailableError` past the retries; another ``APIError`` (a
        refusal) is raised as it is, for the caller to translate. Retrying ``POST /v2/orders``
        is safe: an order that did reach Alpaca is refused as a duplicate the second time.
        """
        exceptions = _alpaca("alpaca.common.exceptions")
        import requests  # alpaca-py's HTTP library: there whenever alpaca-py is

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return call(*args)
            except exceptions.APIError as exc:
                code = _status_code(exc)
                if not _retryable(code):
                    raise
                wait, problem = _retry_after(exc), _reason(exc)
                last: BaseException = exc
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.InvalidJSONError) as exc:
                wait, problem, last = None, _network_problem(exc), exc
            except requests.exceptions.RequestException as exc:  # a bad URL, not the network
                raise UserInputError(redact(
                    f"cannot send {what} to {self.base_url}: {_network_problem(exc)}; check "
                    "the alpaca broker's base_url")) from exc
            except pydantic.ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(part) for part in problem.get("loc", ()))
                raise QuantorchError(redact(
                    f"Alpaca's answer to {what} is not in the shape alpaca-py reads "
                    f"({exc.error_count()} problem(s), first at {where or 'the top'}: "
                    f"{problem.get('msg', '')}); is alpaca-py up to date?")) from exc
            if attempt == self.retries:
                raise BrokerUnavailableError(redact(
                    f"Alpaca did not answer {what} after {self.retries + 1} tries ({problem}); "
                    "run the cycle again later")) from last
            wait = min(self.max_wait_s, delay if wait is None else wait)
            log.warning("%s", redact(f"Alpaca {what}: {problem}; retry {attempt + 1} of "
                                     f"{self.retries} in {wait:.1f}s"))
            _sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _refused(self, what: str, exc: Any) -> QuantorchError:
        code = _status_code(exc)
        message = f"Alpaca refused {what} ({_reason(exc)})"
        if code in (401, 403):
            return UserInputError(redact(
                f"{message}; check the paper keys in ${self.key_env} and ${self.secret_env} "
                "(paper keys work on the paper endpoint only)"))
        return QuantorchError(redact(message))


def _timeout_session(timeout_s: float) -> Any:
    """A requests session with a default timeout (alpaca-py passes none)."""
    import requests

    class TimeoutSession(requests.Session):
        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout_s
            return super().request(method, url, *args, **kwargs)

    return TimeoutSession()


#: Waits between retries (a module attribute so tests can record them instead of sleeping).
_sleep: Callable[[float], None] = time.sleep


def _alpaca(module: str) -> Any:
    """An alpaca-py module, imported when first needed (quantorch imports without it)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserInputError(_MISSING_EXTRA) from exc


def _read_key(name: str, what: str) -> str:
    names = [name] + ([_KEY_ALIASES[name]] if name in _KEY_ALIASES else [])
    for candidate in names:
        value = os.environ.get(candidate, "").strip()
        if value:
            register_secret(value)
            return value
    spelled = " or ".join(f"${n}" for n in names)
    raise UserInputError(
        f"the alpaca broker needs its {what} in {spelled}, which is not set: create paper "
        "keys in Alpaca's dashboard (Paper Trading, API keys) and export them")


def _paper_url(base_url: str | None) -> str:
    if base_url is None:
        return PAPER_URL
    url = str(base_url).strip().rstrip("/")
    url = url.removesuffix("/v2")  # alpaca-py adds the version itself
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    if host.lower() == _LIVE_HOST:
        raise UserInputError(
            f"the alpaca broker trades paper accounts only, not {_LIVE_HOST}: leave base_url "
            f"unset for {PAPER_URL}")
    if not url.startswith(("https://", "http://")):
        raise UserInputError(redact(f"the alpaca broker's base_url must be an http(s) URL, "
                                    f"got {url!r}"))
    return url


def _status_code(exc: Any) -> int | None:
    return getattr(exc, "status_code", None)  # None for an APIError built without a response


def _retryable(code: int | None) -> bool:
    return code == 429 or (code is not None and 500 <= code < 600)


def _message(exc: Any) -> str:
    """Alpaca's error message (its JSON body's ``message``), else the body's text."""
    try:
        message = exc.message
    except (ValueError, KeyError, TypeError):  # not JSON: an HTML error page, an empty body
        message = str(exc)
    return str(message)


def _reason(exc: Any) -> str:
    """A short, one-line, redacted reason for an Alpaca refusal."""
    code = _status_code(exc)
    text = " ".join(_message(exc).split()) or "no message"
    text = redact(text)
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 3] + "..."
    return f"HTTP {code}: {text}" if code is not None else text


def _network_problem(exc: BaseException) -> str:
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 3] + "..."
    return redact(f"{name}: {text}" if text else name)


def _retry_after(exc: Any) -> float | None:
    """The wait a 429 or 503 asks for (``Retry-After``: seconds or an HTTP date)."""
    response = getattr(exc, "response", None)
    return retry_after_seconds(None if response is None else response.headers.get("Retry-After"))


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise QuantorchError(f"Alpaca answered an unreadable {what}: {value!r}") from exc
    if not np.isfinite(number):
        raise QuantorchError(f"Alpaca answered an unreadable {what}: {value!r}")
    return number


def _ack(placed: Any) -> OrderAck:
    quantity = _number(placed.qty or 0, "order qty")
    filled = _number(placed.filled_qty or 0, "filled_qty")
    status, reason = alpaca_status(getattr(placed.status, "value", placed.status), quantity,
                                   filled)
    return OrderAck(client_order_id=str(placed.client_order_id), status=status,
                    broker_order_id=str(placed.id), filled_quantity=filled, reason=reason)


def _fill(activity: dict[str, Any], placed: Any, decided: pd.Timestamp, session: pd.Timestamp,
          reference: dict[str, float]) -> Fill | None:
    """One FILL activity as a :class:`Fill`, None when it executed after ``session`` (or
    lacks an id or a time)."""
    if not activity.get("id") or not activity.get("transaction_time"):
        log.warning("an Alpaca fill activity without an id or a time was skipped: %s",
                    redact(str(activity)[:_REASON_CHARS]))
        return None
    when = pd.Timestamp(activity["transaction_time"])
    when = when.tz_localize("UTC") if when.tzinfo is None else when
    filled_on = when.tz_convert(EXCHANGE_TZ).tz_localize(None).normalize()
    if filled_on > session:
        return None
    quantity = abs(_number(activity.get("qty"), "fill qty"))
    price = _number(activity.get("price"), "fill price")
    if quantity <= 0 or price <= 0:
        return None
    side = str(getattr(placed.side, "value", placed.side) or activity.get("side"))
    side = "buy" if side == "buy" else "sell"  # an activity's "sell_short" is a sell
    ticker = str(placed.symbol or activity.get("symbol"))
    ref = reference.get(ticker, np.nan) if filled_on == session else np.nan
    slippage = 0.0
    if np.isfinite(ref) and ref > 0:
        slippage = (price - ref) * quantity if side == "buy" else (ref - price) * quantity
    return Fill(
        fill_id=str(activity["id"]), client_order_id=str(placed.client_order_id),
        ticker=ticker, side=side, quantity=quantity, fill_price=price,
        notional=_cents(activity.get("qty"), activity.get("price")), fees=0.0,
        slippage_cost=float(slippage),
        decision_session=decided, fill_session=filled_on,
    )


def _cents(quantity: Any, price: Any) -> float:
    """A fill's cash as Alpaca books it: quantity x price from the activity's own decimal
    strings, rounded to the cent half to even (per fill), so that the ledger's cash adds up to
    the account's to the cent however many fractional fills there are."""
    amount = abs(Decimal(str(quantity))) * Decimal(str(price))
    return float(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))
