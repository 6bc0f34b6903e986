"""The one place quantorch writes SQL: typed functions over an open DuckDB connection.

Every writer takes a connection inside :meth:`quantorch.store.Store.transaction` (so a failure
keeps nothing of the unit of work) and names its columns explicitly: a schema change can never
shift a value into the wrong column. Frames may carry more columns than the table (they are
ignored); a missing NOT NULL column raises :class:`ValueError` naming it.

The account tables of schema version 6 (``orders``, ``broker_fills``, ``positions``,
``cash_ledger``, ``cycles``) take plain mappings, DataFrames, or any object with the attributes
of :mod:`quantorch.kernel.execution`'s frozen ``Order``, ``Fill`` and ``Position`` (read by name,
so this module imports nothing from the kernel). Every write there is idempotent where a restart
may repeat it: an order intent, a fill and a fill's cash entries are stored once.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from quantorch.store._schema import _CASH_KINDS, _CYCLE_STATUSES, _ORDER_STATUSES

__all__ = [
    "CASH_KINDS",
    "CYCLE_STATUSES",
    "ORDER_STATUSES",
    "RunRecord",
    "cash_balance",
    "cycle",
    "extend_coverage",
    "fills_for",
    "insert_broker_fills",
    "insert_cash_entries",
    "insert_decision_bill",
    "decision_costs_paid",
    "insert_decisions",
    "insert_transcripts",
    "insert_equity",
    "insert_fills",
    "insert_news",
    "insert_order_intents",
    "insert_run",
    "insert_tool_calls",
    "orders_for",
    "positions_at",
    "put_tool_cache",
    "update_order",
    "shares_held",
    "account",
    "accounts",
    "cycles_of",
    "extend_run",
    "insert_account",
    "update_account",
    "upsert_equity_row",
    "upsert_cycle",
    "upsert_fundamentals",
    "upsert_positions",
    "upsert_prices",
]

Connection = duckdb.DuckDBPyConnection
Session = dt.date | pd.Timestamp | str

#: Order statuses, in the order an order moves through them (the last four are final).
ORDER_STATUSES: tuple[str, ...] = _ORDER_STATUSES
#: Kinds of cash movement in ``cash_ledger``.
CASH_KINDS: tuple[str, ...] = _CASH_KINDS
#: Statuses of a paper cycle, in the order a cycle moves through them.
CYCLE_STATUSES: tuple[str, ...] = _CYCLE_STATUSES

_FINISHED_CYCLE = frozenset({"done", "failed", "missed"})
# +1: the entry adds cash, -1: it spends cash, 0: either
_CASH_SIGN = {
    "deposit": 1, "sell": 1, "buy": -1, "fee": -1, "tool_cost": -1, "llm_cost": -1,
    "adjustment": 0,
}  # fmt: skip


# ---- tables: the columns the repository writes, as the schema declares them -------------------


@dataclass(frozen=True)
class _Table:
    name: str
    columns: Mapping[str, str]  # column -> DuckDB type, in table order
    required: frozenset[str]  # NOT NULL without a default: a frame must carry them


def _table(name: str, columns: str, optional: str = "") -> _Table:
    pairs = [item.split(":") for item in columns.split()]
    return _Table(name, dict(pairs), frozenset(c for c, _ in pairs) - set(optional.split()))


_PRICES = _table(
    "prices",
    "ticker:VARCHAR date:DATE source:VARCHAR open:DOUBLE high:DOUBLE low:DOUBLE close:DOUBLE "
    "adj_close:DOUBLE volume:DOUBLE",
    optional="open high low volume",
)
_NEWS = _table(
    "news",
    "news_id:VARCHAR published_at:TIMESTAMP ticker:VARCHAR headline:VARCHAR body:VARCHAR "
    "source:VARCHAR",
    optional="body",
)
_FUNDAMENTALS = _table(
    "fundamentals",
    "ticker:VARCHAR period_end:DATE filed_at:DATE metric:VARCHAR value:DOUBLE source:VARCHAR",
)
_TOOL_CALLS = _table(
    "tool_calls",
    "call_id:VARCHAR run_id:VARCHAR tool:VARCHAR provider:VARCHAR ticker:VARCHAR "
    "as_of:TIMESTAMP arguments:JSON outputs:JSON summary:VARCHAR coverage:BOOLEAN "
    "cost_usd:DOUBLE latency_ms:DOUBLE cache_hit:BOOLEAN error:VARCHAR input_tokens:INTEGER "
    "output_tokens:INTEGER created_at:TIMESTAMP executor:VARCHAR",
    optional="run_id summary error input_tokens output_tokens executor",
)
_TOOL_CACHE = _table(
    "tool_cache",
    "cache_key:VARCHAR tool:VARCHAR provider:VARCHAR payload:JSON created_at:TIMESTAMP",
)
_EQUITY = _table(
    "equity",
    "run_id:VARCHAR date:DATE equity:DOUBLE cash:DOUBLE gross_exposure:DOUBLE "
    "benchmark_equity:DOUBLE equal_weight_equity:DOUBLE",
    optional="benchmark_equity equal_weight_equity",
)
_FILLS = _table(
    "fills",
    "run_id:VARCHAR fill_id:INTEGER decision_date:DATE fill_date:DATE ticker:VARCHAR "
    "side:VARCHAR quantity:DOUBLE fill_price:DOUBLE notional:DOUBLE fees:DOUBLE "
    "slippage_cost:DOUBLE",
)
_DECISIONS = _table(
    "decisions",
    "run_id:VARCHAR decision_id:INTEGER orchestrator:VARCHAR profile:VARCHAR ticker:VARCHAR "
    "decision_date:DATE fill_date:DATE horizon:INTEGER tools_called:VARCHAR[] n_calls:INTEGER "
    "tool_cost_usd:DOUBLE proposed_position:DOUBLE target_weight:DOUBLE guard_note:VARCHAR "
    "rationale:VARCHAR reward:DOUBLE executor:VARCHAR llm_cost_usd:DOUBLE llm_tokens:INTEGER",
    optional="fill_date guard_note rationale reward executor llm_cost_usd llm_tokens",
)
_TRANSCRIPTS = _table(
    "llm_transcripts",
    "run_id:VARCHAR decision_id:INTEGER ticker:VARCHAR decision_date:DATE model:VARCHAR "
    "messages:JSON rounds:INTEGER cached_rounds:INTEGER corrections:INTEGER "
    "prompt_tokens:INTEGER completion_tokens:INTEGER cost_usd:DOUBLE latency_ms:DOUBLE "
    "position:VARCHAR fallback:VARCHAR rationale:VARCHAR created_at:TIMESTAMP",
    optional="position fallback rationale",
)
_ORDERS = _table(
    "orders",
    "client_order_id:VARCHAR account:VARCHAR run_id:VARCHAR broker:VARCHAR ticker:VARCHAR "
    "side:VARCHAR quantity:DOUBLE target_weight:DOUBLE reference_price:DOUBLE "
    "decision_session:DATE status:VARCHAR broker_order_id:VARCHAR filled_quantity:DOUBLE "
    "reason:VARCHAR created_at:TIMESTAMP updated_at:TIMESTAMP",
    optional="run_id target_weight reference_price broker_order_id filled_quantity reason",
)
_BROKER_FILLS = _table(
    "broker_fills",
    "account:VARCHAR broker_fill_id:VARCHAR client_order_id:VARCHAR run_id:VARCHAR "
    "ticker:VARCHAR side:VARCHAR quantity:DOUBLE fill_price:DOUBLE notional:DOUBLE fees:DOUBLE "
    "slippage_cost:DOUBLE decision_session:DATE fill_session:DATE recorded_at:TIMESTAMP",
    optional="run_id slippage_cost decision_session",
)
_POSITIONS = _table(
    "positions",
    "account:VARCHAR session:DATE ticker:VARCHAR quantity:DOUBLE market_price:DOUBLE "
    "market_value:DOUBLE recorded_at:TIMESTAMP",
    optional="market_price market_value",
)
_CASH_LEDGER = _table(
    "cash_ledger",
    "account:VARCHAR entry_id:INTEGER session:DATE kind:VARCHAR amount:DOUBLE "
    "client_order_id:VARCHAR broker_fill_id:VARCHAR entry_key:VARCHAR note:VARCHAR "
    "created_at:TIMESTAMP",
    optional="client_order_id broker_fill_id entry_key note",
)
_CYCLES = _table(
    "cycles",
    "account:VARCHAR profile:VARCHAR session:DATE status:VARCHAR run_id:VARCHAR broker:VARCHAR "
    "started_at:TIMESTAMP updated_at:TIMESTAMP finished_at:TIMESTAMP message:VARCHAR "
    "resume_step:VARCHAR",
    optional="run_id broker finished_at message resume_step",
)

_CAST = frozenset({"DATE", "TIMESTAMP", "JSON"})


@contextmanager
def _registered(con: Connection, name: str, frame: pd.DataFrame) -> Iterator[str]:
    con.register(name, frame)
    try:
        yield name
    finally:
        con.unregister(name)


def _insert_frame(
    con: Connection, table: _Table, frame: pd.DataFrame, *, verb: str = "INSERT", tail: str = ""
) -> int:
    """``verb INTO table (columns) SELECT columns FROM frame tail``; rows the statement wrote."""
    present = [c for c in table.columns if c in frame.columns]
    missing = sorted(table.required - set(present))
    if missing:
        raise ValueError(
            f"cannot write {table.name}: the rows lack column(s) {', '.join(missing)}"
        )
    if frame.empty:
        return 0
    rows = frame[present]
    nullable_ints = [c for c in present if table.columns[c] == "INTEGER"
                     and c not in table.required and rows[c].dtype == object]
    if nullable_ints:  # None and ints mixed: keep the NULLs and the integer type
        rows = rows.astype({c: "Int64" for c in nullable_ints})
    select = ", ".join(
        f"CAST({c} AS {table.columns[c]})" if table.columns[c] in _CAST else c for c in present
    )
    with _registered(con, f"_incoming_{table.name}", rows) as view:
        result = con.execute(
            f"{verb} INTO {table.name} ({', '.join(present)}) SELECT {select} FROM {view} {tail}"
        ).fetchall()
    return int(result[0][0]) if result else 0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# ---- market data -------------------------------------------------------------------------------


def upsert_prices(con: Connection, frame: pd.DataFrame, source: str) -> int:
    """Write daily bars of one source, replacing stored bars of the same (ticker, date, source).

    Parameters
    ----------
    con
        A connection inside ``Store.transaction()``.
    frame
        Columns ``ticker``, ``date``, ``close``, ``adj_close`` and optionally ``open``, ``high``,
        ``low``, ``volume``.
    source
        Provider the bars came from (``prices.source``).

    Returns
    -------
    int
        Rows written.
    """
    return _insert_frame(con, _PRICES, frame.assign(source=source), verb="INSERT OR REPLACE")


def extend_coverage(
    con: Connection,
    source: str,
    spans: Mapping[str, tuple[dt.date, dt.date]],
    *,
    fetched_at: dt.datetime | None = None,
) -> None:
    """Widen each ticker's fetched range (``price_coverage``) to include ``(first, last)``."""
    now = fetched_at or _utcnow()
    for ticker, (first, last) in spans.items():
        con.execute(
            """
            INSERT INTO price_coverage (ticker, source, first_date, last_date, fetched_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (ticker, source) DO UPDATE SET
                first_date = least(price_coverage.first_date, excluded.first_date),
                last_date = greatest(price_coverage.last_date, excluded.last_date),
                fetched_at = excluded.fetched_at
            """,
            [ticker, source, first, last, now],
        )


def insert_news(con: Connection, frame: pd.DataFrame) -> int:
    """Write news items; an item already stored (same ``news_id``) is left as it is.

    Returns
    -------
    int
        Items that were new.
    """
    return _insert_frame(con, _NEWS, frame, tail="ON CONFLICT (news_id) DO NOTHING")


def upsert_fundamentals(con: Connection, frame: pd.DataFrame) -> tuple[int, int]:
    """Write statement items; a stored item of the same key (ticker, period_end, metric, source)
    is replaced.

    Returns
    -------
    tuple of int
        ``(inserted, replaced)``: rows that were new, and stored rows whose value or filing date
        changed (rows stored unchanged count in neither).
    """
    if frame.empty:
        return 0, 0
    with _registered(con, "_incoming_fundamentals_keys", frame) as view:
        inserted, replaced = con.execute(
            f"""
            SELECT
                count(*) FILTER (WHERE f.ticker IS NULL),
                count(*) FILTER (WHERE f.ticker IS NOT NULL
                                 AND (f.value <> i.value
                                      OR f.filed_at <> CAST(i.filed_at AS DATE)))
            FROM {view} AS i
            LEFT JOIN fundamentals AS f
              ON f.ticker = i.ticker AND f.period_end = CAST(i.period_end AS DATE)
             AND f.metric = i.metric AND f.source = i.source
            """
        ).fetchall()[0]
    _insert_frame(con, _FUNDAMENTALS, frame, verb="INSERT OR REPLACE")
    return int(inserted), int(replaced)


# ---- tools -------------------------------------------------------------------------------------


def insert_tool_calls(con: Connection, frame: pd.DataFrame) -> int:
    """Write tool calls (``tool_calls`` columns; ``arguments`` and ``outputs`` as JSON text).

    ``run_id``, ``summary``, ``error``, ``input_tokens`` and ``output_tokens`` may be absent
    (stored as NULL). Returns the rows written.
    """
    return _insert_frame(con, _TOOL_CALLS, frame)


def put_tool_cache(con: Connection, frame: pd.DataFrame, *, replace: bool = False) -> int:
    """Write cache entries (``cache_key, tool, provider, payload`` JSON text, ``created_at``).

    A key already cached keeps its stored payload, unless ``replace`` is set. Returns the rows
    written.
    """
    return _insert_frame(
        con, _TOOL_CACHE, frame, verb="INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
    )


# ---- runs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``: every column, by name.

    JSON columns (``config``, ``metrics``, ``benchmark_metrics``, ``equal_weight_metrics``) take
    JSON text or a mapping (serialised with :func:`json.dumps`).
    """

    run_id: str
    kind: str
    strategy: str
    source: str
    universe: tuple[str, ...]
    start_date: dt.date
    end_date: dt.date
    rebalance: str
    seed: int
    config_hash: str
    config: str | Mapping[str, Any]
    code_version: str
    metrics: str | Mapping[str, Any]
    benchmark: str | None = None
    benchmark_label: str | None = None
    benchmark_metrics: str | Mapping[str, Any] | None = None
    equal_weight_metrics: str | Mapping[str, Any] | None = None
    report_path: str | Path | None = None
    created_at: dt.datetime = field(default_factory=_utcnow)

    def __post_init__(self) -> None:
        object.__setattr__(self, "universe", tuple(self.universe))
        if self.kind not in ("backtest", "train", "evaluate", "paper"):
            raise ValueError(
                f"run kind {self.kind!r} is not one of backtest, train, evaluate, paper"
            )


_RUN_JSON = frozenset({"config", "metrics", "benchmark_metrics", "equal_weight_metrics"})


def insert_run(con: Connection, run: RunRecord) -> None:
    """Write one run (``runs``); a run id already stored raises ``duckdb.ConstraintException``."""
    names = [f.name for f in fields(RunRecord)]
    values: list[Any] = []
    for name in names:
        value = getattr(run, name)
        if name in _RUN_JSON and value is not None and not isinstance(value, str):
            value = json.dumps(value)
        elif name == "universe":
            value = list(value)
        elif name == "report_path" and value is not None:
            value = str(value)
        values.append(value)
    con.execute(
        f"INSERT INTO runs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", values
    )


def insert_equity(con: Connection, frame: pd.DataFrame) -> int:
    """Write a run's daily equity (``run_id, date, equity, cash, gross_exposure`` and optionally
    ``benchmark_equity``, ``equal_weight_equity``; NaN is stored as NULL). Returns rows written."""
    return _insert_frame(con, _EQUITY, frame)


def insert_fills(con: Connection, frame: pd.DataFrame) -> int:
    """Write a backtest's fills (every ``fills`` column; dates may be timestamps). Rows written."""
    return _insert_frame(con, _FILLS, frame)


def insert_decisions(con: Connection, frame: pd.DataFrame) -> int:
    """Write a run's decisions (``decisions`` columns; ``fill_date``, ``guard_note``,
    ``rationale``, ``reward``, ``llm_cost_usd``, ``llm_tokens`` may be absent). Other columns,
    e.g. ``forward_return``, are ignored. Returns rows written."""
    return _insert_frame(con, _DECISIONS, frame)


def insert_transcripts(con: Connection, frame: pd.DataFrame) -> int:
    """Write the llm orchestrator's conversations (``llm_transcripts`` columns; ``messages`` as
    JSON text; ``created_at`` defaults to now). Returns rows written."""
    if "created_at" not in frame:
        frame = frame.assign(created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
    return _insert_frame(con, _TRANSCRIPTS, frame)


# ---- orders, fills, positions, cash, cycles (schema version 6) --------------------------------

_MISSING = object()


def _records(values: Any) -> list[Any]:
    if values is None:
        return []
    if isinstance(values, pd.DataFrame):
        return values.to_dict("records")
    if isinstance(values, Mapping) or not isinstance(values, Iterable):
        return [values]
    return list(values)


def _get(item: Any, name: str, default: Any = _MISSING) -> Any:
    """``item[name]`` of a mapping, else ``item.name``; ``default`` when absent (else raise)."""
    if isinstance(item, Mapping):
        value = item.get(name, default)
    else:
        value = getattr(item, name, default)
    if value is _MISSING:
        raise ValueError(f"{type(item).__name__} value {item!r} has no {name!r}")
    if value is not None and not isinstance(value, str) and _is_missing(value):
        return None  # NaN, NaT or pd.NA from a DataFrame row
    return value


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array: not a missing scalar
        return False


def _session(value: Any, what: str) -> dt.date:
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} {value!r} is not a date") from exc
    if pd.isna(stamp):
        raise ValueError(f"{what} is missing: a date is required")
    return stamp.date()


def _number(
    value: Any, what: str, *, positive: bool = False, optional: bool = False
) -> float | None:
    rule = "a positive finite number" if positive else "a finite number"
    if value is None:
        if optional:
            return None
        raise ValueError(f"{what} is missing (None or NaN): it must be {rule}")
    number = float(value)
    if not math.isfinite(number) or (positive and number <= 0):
        raise ValueError(f"{what} is {value!r}: it must be {rule}")
    return number


def _side(value: Any, what: str) -> str:
    side = str(getattr(value, "value", value)).lower()  # a str or an Enum of 'buy' / 'sell'
    if side not in ("buy", "sell"):
        raise ValueError(f"{what} side is {value!r}: it must be 'buy' or 'sell'")
    return side


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _frame(rows: list[dict[str, Any]], table: _Table) -> pd.DataFrame:
    # object columns: None stays NULL and DuckDB infers each column's type from its values
    return pd.DataFrame.from_records(rows, columns=list(table.columns)).astype(object)


def insert_order_intents(
    con: Connection,
    account: str,
    orders: Iterable[Any] | pd.DataFrame,
    *,
    broker: str,
    run_id: str | None = None,
) -> int:
    """Write orders as ``intent``, before they are sent; an order already stored is kept as is.

    Parameters
    ----------
    con
        A connection inside ``Store.transaction()``.
    account
        Paper account, or the run id of a backtest.
    orders
        ``Order`` values (or mappings, or a DataFrame) with ``client_order_id``, ``ticker``,
        ``side``, ``quantity`` (positive shares), ``decision_session`` and optionally
        ``target_weight``, ``reference_price``.
    broker
        Broker port that will execute them: ``sim``, ``alpaca``, ``backtest``.
    run_id
        The run or paper cycle that decided them.

    Returns
    -------
    int
        Orders that were new (a restart that writes the same intents again gets 0).
    """
    now = _utcnow()
    rows, seen = [], set()
    for order in _records(orders):
        order_id = str(_get(order, "client_order_id"))
        if order_id in seen:
            continue
        seen.add(order_id)
        what = f"order {order_id}"
        rows.append({
            "client_order_id": order_id,
            "account": account,
            "run_id": run_id,
            "broker": broker,
            "ticker": str(_get(order, "ticker")),
            "side": _side(_get(order, "side"), what),
            "quantity": _number(_get(order, "quantity"), f"{what} quantity", positive=True),
            "target_weight": _number(_get(order, "target_weight", None), f"{what} target_weight",
                                     optional=True),
            "reference_price": _number(_get(order, "reference_price", None),
                                       f"{what} reference_price", optional=True),
            "decision_session": _session(_get(order, "decision_session"), f"{what} session"),
            "status": "intent",
            "broker_order_id": None,
            "filled_quantity": 0.0,
            "reason": None,
            "created_at": now,
            "updated_at": now,
        })
    if not rows:
        return 0
    return _insert_frame(
        con, _ORDERS, _frame(rows, _ORDERS), tail="ON CONFLICT (client_order_id) DO NOTHING"
    )


_ORDER_CHANGES = frozenset({"status", "broker_order_id", "filled_quantity", "reason"})


def update_order(con: Connection, client_order_id: str, **changes: Any) -> None:
    """Record what the broker said about an order: its status, id, filled shares or reason.

    Parameters
    ----------
    con
        A connection inside ``Store.transaction()``.
    client_order_id
        The order (written first by :func:`insert_order_intents`).
    **changes
        Any of ``status`` (one of :data:`ORDER_STATUSES`), ``broker_order_id``,
        ``filled_quantity`` (:func:`insert_broker_fills` keeps it equal to the sum of the
        order's fills) and ``reason``. ``updated_at`` is set to now.

    Raises
    ------
    ValueError
        An unknown change, status or order.
    """
    unknown = sorted(set(changes) - _ORDER_CHANGES)
    if unknown or not changes:
        raise ValueError(
            f"update_order changes {', '.join(sorted(_ORDER_CHANGES))}; got "
            f"{', '.join(unknown) or 'nothing'}"
        )
    if "status" in changes and changes["status"] not in ORDER_STATUSES:
        raise ValueError(
            f"order status {changes['status']!r} is not one of {', '.join(ORDER_STATUSES)}"
        )
    if changes.get("filled_quantity") is not None:
        filled = _number(changes["filled_quantity"], f"order {client_order_id} filled_quantity")
        if filled < 0:
            raise ValueError(f"order {client_order_id} filled_quantity {filled} is negative")
        changes["filled_quantity"] = filled
    names = sorted(changes)
    assignments = ", ".join(f"{name} = ?" for name in names)
    (updated,) = con.execute(
        f"UPDATE orders SET {assignments}, updated_at = ? WHERE client_order_id = ?",
        [*(changes[n] for n in names), _utcnow(), client_order_id],
    ).fetchall()[0]
    if not updated:
        raise ValueError(
            f"no order {client_order_id!r} in orders: write its intent first "
            "(insert_order_intents)"
        )


def insert_broker_fills(
    con: Connection,
    account: str,
    fills: Iterable[Any] | pd.DataFrame,
    *,
    run_id: str | None = None,
    cash: bool = True,
) -> int:
    """Store the fills a broker reported, each once, with their cash entries.

    Parameters
    ----------
    con
        A connection inside ``Store.transaction()``.
    account
        The account the fills belong to.
    fills
        ``Fill`` values (or mappings, or a DataFrame) with ``fill_id`` (or ``broker_fill_id``:
        the broker's id of the execution), ``client_order_id``, ``ticker``, ``side``,
        ``quantity``, ``fill_price``, ``fees``, ``fill_session`` and optionally ``notional``
        (default quantity x fill_price), ``slippage_cost``, ``decision_session``.
    run_id
        The run or paper cycle recording them.
    cash
        Also write each fill's cash entries (:func:`insert_cash_entries`): the buy or sell
        notional and the fee, keyed by the fill so a replay adds nothing. On by default so a
        fill is never stored without its cash.

    Returns
    -------
    int
        Fills that were new; fills already stored (same account and fill id) are ignored.
        Each order touched gets ``filled_quantity`` = the sum of its fills.
    """
    now = _utcnow()
    rows, seen = [], set()
    for fill in _records(fills):
        fill_id = _get(fill, "broker_fill_id", None)
        fill_id = str(fill_id if fill_id is not None else _get(fill, "fill_id"))
        if fill_id in seen:
            continue
        seen.add(fill_id)
        what = f"fill {fill_id}"
        quantity = _number(_get(fill, "quantity"), f"{what} quantity", positive=True)
        price = _number(_get(fill, "fill_price"), f"{what} fill_price", positive=True)
        notional = _get(fill, "notional", None)
        decided = _get(fill, "decision_session", None)
        rows.append({
            "account": account,
            "broker_fill_id": fill_id,
            "client_order_id": str(_get(fill, "client_order_id")),
            "run_id": run_id,
            "ticker": str(_get(fill, "ticker")),
            "side": _side(_get(fill, "side"), what),
            "quantity": quantity,
            "fill_price": price,
            "notional": quantity * price if notional is None
            else _number(notional, f"{what} notional"),
            "fees": _number(_get(fill, "fees"), f"{what} fees"),
            "slippage_cost": _number(_get(fill, "slippage_cost", None), f"{what} slippage_cost",
                                     optional=True),
            "decision_session": None if decided is None else _session(decided, f"{what} session"),
            "fill_session": _session(_get(fill, "fill_session"), f"{what} fill_session"),
            "recorded_at": now,
        })
    if not rows:
        return 0
    new = _insert_frame(
        con, _BROKER_FILLS, _frame(rows, _BROKER_FILLS),
        tail="ON CONFLICT (account, broker_fill_id) DO NOTHING",
    )
    if cash:
        insert_cash_entries(con, account, [e for row in rows for e in _fill_cash(row)])
    con.execute(
        """
        UPDATE orders SET filled_quantity = f.filled, updated_at = ?
        FROM (SELECT client_order_id, sum(quantity) AS filled FROM broker_fills
              WHERE account = ? AND client_order_id IN (SELECT unnest(?))
              GROUP BY client_order_id) AS f
        WHERE orders.client_order_id = f.client_order_id
          AND orders.filled_quantity IS DISTINCT FROM f.filled
        """,
        [now, account, sorted({row["client_order_id"] for row in rows})],
    )
    return new


def _fill_cash(fill: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A fill's cash: -notional for a buy, +notional for a sell, and -fees (when charged)."""
    sign = -1.0 if fill["side"] == "buy" else 1.0
    common = {"session": fill["fill_session"], "client_order_id": fill["client_order_id"],
              "broker_fill_id": fill["broker_fill_id"]}
    entries = [{**common, "kind": fill["side"], "amount": sign * fill["notional"]}]
    if fill["fees"]:
        entries.append({**common, "kind": "fee", "amount": -abs(fill["fees"])})
    return entries


def insert_cash_entries(
    con: Connection, account: str, entries: Iterable[Any] | pd.DataFrame
) -> int:
    """Append cash movements to an account's ledger; repeats of a keyed entry are ignored.

    Parameters
    ----------
    con
        A connection inside ``Store.transaction()``.
    account
        The account.
    entries
        Mappings, objects or a DataFrame with ``session``, ``kind`` (one of
        :data:`CASH_KINDS`), ``amount`` (signed USD: deposits and sells positive; buys, fees
        and costs negative) and optionally ``client_order_id``, ``broker_fill_id``,
        ``entry_key``, ``note``. An entry whose (``broker_fill_id``, ``kind``) or ``entry_key``
        is already in the account's ledger (or earlier in ``entries``) is skipped; entries
        with neither are always appended.

    Returns
    -------
    int
        Entries appended (numbered ``entry_id`` 1, 2, ... per account, in the order given).
    """
    now = _utcnow()
    rows, seen = [], set()
    for entry in _records(entries):
        kind = _get(entry, "kind")
        if kind not in CASH_KINDS:
            raise ValueError(f"cash entry kind {kind!r} is not one of {', '.join(CASH_KINDS)}")
        amount = _number(_get(entry, "amount"), f"{kind} amount")
        if amount * _CASH_SIGN[kind] < 0:
            direction = "positive" if _CASH_SIGN[kind] > 0 else "negative"
            raise ValueError(
                f"a {kind} entry of {amount} has the wrong sign: {kind} amounts are {direction} "
                "(signed USD, negative spends cash)"
            )
        row = {
            "account": account,
            "entry_id": None,  # numbered in SQL, after the repeats are dropped
            "session": _session(_get(entry, "session"), f"{kind} entry session"),
            "kind": kind,
            "amount": amount,
            "client_order_id": _text(_get(entry, "client_order_id", None)),
            "broker_fill_id": _text(_get(entry, "broker_fill_id", None)),
            "entry_key": _text(_get(entry, "entry_key", None)),
            "note": _text(_get(entry, "note", None)),
            "created_at": now,
        }
        keys = set()
        if row["broker_fill_id"] is not None:
            keys.add(("fill", row["broker_fill_id"], kind))
        if row["entry_key"] is not None:
            keys.add(("key", row["entry_key"]))
        if keys & seen:
            continue
        seen |= keys
        rows.append(row)
    if not rows:
        return 0
    columns = [c for c in _CASH_LEDGER.columns if c not in ("account", "entry_id")]
    incoming = _frame(rows, _CASH_LEDGER)[columns].assign(position=range(len(rows)))
    with _registered(con, "_incoming_cash_ledger", incoming) as view:
        (appended,) = con.execute(
            f"""
            INSERT INTO cash_ledger (account, entry_id, {', '.join(columns)})
            SELECT ?, (SELECT coalesce(max(entry_id), 0) FROM cash_ledger WHERE account = ?)
                      + row_number() OVER (ORDER BY i.position),
                   {', '.join(
                       f"CAST(i.{c} AS {_CASH_LEDGER.columns[c]})" for c in columns)}
            FROM {view} AS i
            WHERE NOT EXISTS (
                SELECT 1 FROM cash_ledger AS c
                WHERE c.account = ?
                  AND ((c.broker_fill_id = i.broker_fill_id AND c.kind = i.kind)
                       OR c.entry_key = i.entry_key)
            )
            """,
            [account, account, account],
        ).fetchall()[0]
    return int(appended)


def upsert_positions(
    con: Connection, account: str, session: Session, positions: Iterable[Any] | pd.DataFrame
) -> int:
    """Store the account's snapshot at ``session``, replacing any stored one for that session.

    ``positions`` are ``Position`` values (or mappings, or a DataFrame) with ``ticker``,
    ``quantity`` and optionally ``market_price``, ``market_value`` (default quantity x
    market_price). An empty snapshot (all cash) removes the session's rows. Returns rows
    written.
    """
    day = _session(session, "positions session")
    now = _utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for position in _records(positions):
        ticker = str(_get(position, "ticker"))
        if ticker in rows:
            raise ValueError(f"positions of {account} at {day} list {ticker} twice")
        what = f"position {ticker}"
        quantity = _number(_get(position, "quantity"), f"{what} quantity")
        price = _number(_get(position, "market_price", None), f"{what} market_price",
                        optional=True)
        value = _number(_get(position, "market_value", None), f"{what} market_value",
                        optional=True)
        if value is None and price is not None:
            value = quantity * price
        rows[ticker] = {"account": account, "session": day, "ticker": ticker,
                        "quantity": quantity, "market_price": price, "market_value": value,
                        "recorded_at": now}
    con.execute("DELETE FROM positions WHERE account = ? AND session = ?", [account, day])
    if not rows:
        return 0
    return _insert_frame(con, _POSITIONS, _frame(list(rows.values()), _POSITIONS))


def upsert_cycle(
    con: Connection,
    account: str,
    profile: str,
    session: Session,
    status: str,
    *,
    run_id: str | None = None,
    broker: str | None = None,
    message: str | None = None,
) -> None:
    """Record how far the paper cycle of (account, profile, session) got.

    The first call stores ``started_at``; later calls change ``status`` and ``message``, keep a
    stored ``run_id`` and ``broker`` unless given, and set ``finished_at`` when the status is
    done, failed or missed (a cycle restarted after a failure clears it again). ``resume_step``
    follows every status but ``failed``: a failed cycle keeps the last step it committed, and a
    retry resumes after it.
    """
    if status not in CYCLE_STATUSES:
        raise ValueError(f"cycle status {status!r} is not one of {', '.join(CYCLE_STATUSES)}")
    now = _utcnow()
    con.execute(
        """
        INSERT INTO cycles (account, profile, session, status, run_id, broker, started_at,
                            updated_at, finished_at, message, resume_step)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (account, profile, session) DO UPDATE SET
            status = excluded.status,
            resume_step = CASE WHEN excluded.status = 'failed' THEN cycles.resume_step
                               ELSE excluded.status END,
            run_id = coalesce(excluded.run_id, cycles.run_id),
            broker = coalesce(excluded.broker, cycles.broker),
            updated_at = excluded.updated_at,
            finished_at = excluded.finished_at,
            message = excluded.message
        """,
        [account, profile, _session(session, "cycle session"), status, run_id, broker, now, now,
         now if status in _FINISHED_CYCLE else None, message,
         None if status == "failed" else status],
    )


# ---- readers -----------------------------------------------------------------------------------


def orders_for(
    con: Connection,
    account: str,
    *,
    session: Session | None = None,
    status: str | Iterable[str] | None = None,
) -> pd.DataFrame:
    """The account's orders (every ``orders`` column), by decision session and id.

    ``session`` keeps one decision session; ``status`` one status or several.
    """
    sql, params = "SELECT * FROM orders WHERE account = ?", [account]
    if session is not None:
        sql += " AND decision_session = ?"
        params.append(_session(session, "session"))
    if status is not None:
        sql += " AND status IN (SELECT unnest(?))"
        params.append([status] if isinstance(status, str) else list(status))
    return con.execute(sql + " ORDER BY decision_session, client_order_id", params).df()


def fills_for(
    con: Connection,
    account: str,
    *,
    session: Session | None = None,
    client_order_id: str | None = None,
) -> pd.DataFrame:
    """The account's broker fills (every ``broker_fills`` column), by fill session.

    ``session`` keeps one fill session; ``client_order_id`` one order.
    """
    sql, params = "SELECT * FROM broker_fills WHERE account = ?", [account]
    if session is not None:
        sql += " AND fill_session = ?"
        params.append(_session(session, "session"))
    if client_order_id is not None:
        sql += " AND client_order_id = ?"
        params.append(client_order_id)
    return con.execute(sql + " ORDER BY fill_session, recorded_at, broker_fill_id", params).df()


def insert_decision_bill(
    con: Connection, account: str, session: Session, tool_cost_usd: float, llm_cost_usd: float
) -> int:
    """Debit what a session's decisions cost besides trading (kernel "Decision bills"): one
    ``tool_cost`` and one ``llm_cost`` entry (zero amounts are not written), keyed by the
    session so a rerun of the same decision never pays twice. Returns the entries appended."""
    day = _session(session, "session")
    entries = [
        {"session": day, "kind": kind, "amount": -float(amount),
         "entry_key": f"{kind.replace('_', '-')}:{day.isoformat()}", "note": note}
        for kind, amount, note in (
            ("tool_cost", tool_cost_usd, "the tools the orchestrator called"),
            ("llm_cost", llm_cost_usd, "the llm orchestrator's tokens"),
        )
        if amount
    ]
    return insert_cash_entries(con, account, entries) if entries else 0


def decision_costs_paid(con: Connection, account: str) -> float:
    """USD the account's decisions have cost so far (its ``tool_cost`` and ``llm_cost``
    entries, as a positive amount): paid from the ledger's cash, never through a broker."""
    return -float(con.execute(
        "SELECT coalesce(sum(amount), 0) FROM cash_ledger "
        "WHERE account = ? AND kind IN ('tool_cost', 'llm_cost')", [account],
    ).fetchall()[0][0])


def cash_balance(con: Connection, account: str, *, through: Session | None = None) -> float:
    """The account's cash: the sum of its ledger (through a session, if given); 0 if none."""
    sql, params = "SELECT coalesce(sum(amount), 0) FROM cash_ledger WHERE account = ?", [account]
    if through is not None:
        sql += " AND session <= ?"
        params.append(_session(through, "through"))
    return float(con.execute(sql, params).fetchall()[0][0])


def positions_at(con: Connection, account: str, session: Session) -> pd.DataFrame:
    """The account's stored snapshot at ``session`` (``ticker, quantity, market_price,
    market_value``), by ticker; empty when it held nothing or no snapshot was stored (see
    :func:`cycle` for which)."""
    return con.execute(
        "SELECT ticker, quantity, market_price, market_value FROM positions "
        "WHERE account = ? AND session = ? ORDER BY ticker",
        [account, _session(session, "session")],
    ).df()


def cycle(con: Connection, account: str, profile: str, session: Session) -> dict[str, Any] | None:
    """The stored cycle of (account, profile, session) as a dict of its columns, or None."""
    cursor = con.execute(
        "SELECT * FROM cycles WHERE account = ? AND profile = ? AND session = ?",
        [account, profile, _session(session, "session")],
    )
    rows = cursor.fetchall()  # DuckDB 2 refuses more work on a connection with unread rows
    if not rows:
        return None
    return dict(zip([d[0] for d in cursor.description], rows[0], strict=True))


def shares_held(con: Connection, account: str) -> dict[str, float]:
    """Signed shares the account holds per ticker: the sum of its broker fills (buys minus
    sells), the source of truth a positions snapshot is checked against."""
    rows = con.execute(
        "SELECT ticker, sum(CASE WHEN side = 'buy' THEN quantity ELSE -quantity END) "
        "FROM broker_fills WHERE account = ? GROUP BY ticker ORDER BY ticker",
        [account],
    ).fetchall()
    return {str(ticker): float(quantity) for ticker, quantity in rows}


# ---- paper accounts ----------------------------------------------------------------------------

_ACCOUNTS = _table(
    "paper_accounts",
    "account:VARCHAR profile:VARCHAR profile_ref:VARCHAR profile_hash:VARCHAR strategy:VARCHAR broker:VARCHAR "
    "source:VARCHAR universe:VARCHAR[] benchmark:VARCHAR rebalance:VARCHAR initial_cash:DOUBLE "
    "first_session:DATE history_start:DATE config_hash:VARCHAR peak_equity:DOUBLE "
    "cooldown_until:DATE halted_reason:VARCHAR created_at:TIMESTAMP updated_at:TIMESTAMP",
    optional="benchmark peak_equity cooldown_until halted_reason",
)


def insert_account(con: Connection, account: Mapping[str, Any]) -> bool:
    """Open a paper account (the ``paper_accounts`` columns); False when it already exists."""
    now = _utcnow()
    row = {**account, "created_at": now, "updated_at": now}
    return _insert_frame(con, _ACCOUNTS, _frame([row], _ACCOUNTS),
                         tail="ON CONFLICT (account) DO NOTHING") == 1


def account(con: Connection, name: str) -> dict[str, Any] | None:
    """The paper account ``name`` as a dict of its columns, or None."""
    cursor = con.execute("SELECT * FROM paper_accounts WHERE account = ?", [name])
    rows = cursor.fetchall()
    if not rows:
        return None
    return dict(zip([d[0] for d in cursor.description], rows[0], strict=True))


def accounts(con: Connection) -> list[str]:
    """Names of the paper accounts, sorted."""
    return [r[0] for r in con.execute("SELECT account FROM paper_accounts ORDER BY 1").fetchall()]


def update_account(con: Connection, name: str, **changes: Any) -> None:
    """Change an account's risk state or halt: ``peak_equity``, ``cooldown_until``,
    ``halted_reason`` (None resumes trading)."""
    allowed = {"peak_equity", "cooldown_until", "halted_reason"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)} of a paper account")
    if not changes:
        return
    sets = ", ".join(f"{c} = ?" for c in changes)
    con.execute(f"UPDATE paper_accounts SET {sets}, updated_at = ? WHERE account = ?",
                [*changes.values(), _utcnow(), name])


def cycles_of(con: Connection, account: str) -> pd.DataFrame:
    """The account's cycles (every ``cycles`` column), by session."""
    return con.execute("SELECT * FROM cycles WHERE account = ? ORDER BY session",
                       [account]).df()


def upsert_equity_row(con: Connection, run_id: str, row: Mapping[str, Any]) -> None:
    """One session's equity of a run (a paper account's curve grows a row per cycle)."""
    _insert_frame(con, _EQUITY, _frame([{**row, "run_id": run_id}], _EQUITY),
                  verb="INSERT OR REPLACE")


def extend_run(con: Connection, run_id: str, end_date: Session, metrics: Mapping[str, Any]) -> None:
    """A paper account's run grows: its last session and metrics to date."""
    con.execute("UPDATE runs SET end_date = ?, metrics = ? WHERE run_id = ?",
                [_session(end_date, "end_date"), json.dumps(dict(metrics)), run_id])
