"""One runner for every tool call: checks, point-in-time cut, timeout, faults, cache, log.

A single call goes through :meth:`ToolRunner.run`:

1. **check** the request: known tool and provider, arguments valid against the tool's JSON
   schema, a ticker with bars, an ``asof`` inside the data (not before the ticker's first bar,
   not after the last session available);
2. **cut** the data at the decision time with :meth:`MarketData.truncate`, so the tool cannot
   see the future;
3. answer from the **cache** when the provider is deterministic (cost 0, ``cache_hit``);
4. otherwise **run** the tool in a worker thread under a timeout; an exception, a timeout or a
   malformed result becomes a :class:`ToolResult` with ``error`` set, never an exception, so a
   faulty tool cannot crash a backtest;
5. **record** the call in DuckDB ``tool_calls`` (batched: one short transaction per flush; the
   file is not held open between flushes).

A request that fails its checks is answered the same way (an error result, cost 0, logged);
:meth:`ToolRunner.check` raises the same problems as :class:`UserInputError` for callers that
want to stop, such as the command line.

``asof`` semantics (see docs/tools.md): a date, or a naive midnight, means the close of that
day (16:00 New York), which sees that day's bar. Another naive time is UTC. A time before the
day's close sees bars up to the previous session only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from quantorch.errors import (
    DateRangeError,
    PluginError,
    QuantorchError,
    RetryableError,
    UnknownTickerError,
    UserInputError,
    closest,
)
from quantorch.redact import redact
from quantorch.store import Store
from quantorch.toolkit.registry import get_tool, resolve_provider
from quantorch.toolkit.spec import (
    ErrorKind,
    MarketData,
    ProviderSpec,
    Tool,
    ToolRequest,
    ToolResult,
)

__all__ = [
    "ToolRunner",
    "CheckedRequest",
    "decision_time",
    "normalise_asof",
    "format_asof",
    "cut_at",
    "check_asof",
    "data_fingerprint",
]

#: Decisions are taken at the close: 16:00 New York.
CLOSE_TIME = dt.time(16, 0)
_EXCHANGE_TZ = "America/New_York"
_CALL_COLUMNS = (
    "call_id", "run_id", "tool", "provider", "ticker", "as_of", "arguments", "outputs", "summary",
    "coverage", "cost_usd", "latency_ms", "cache_hit", "error", "input_tokens", "output_tokens",
    "created_at",
)  # fmt: skip
_CACHE_COLUMNS = ("cache_key", "tool", "provider", "payload", "created_at")


# ---- time -----------------------------------------------------------------------------------


def decision_time(day: dt.date | pd.Timestamp) -> dt.datetime:
    """The close of ``day`` (16:00 New York) as a naive UTC datetime."""
    local = pd.Timestamp.combine(pd.Timestamp(day).date(), CLOSE_TIME).tz_localize(_EXCHANGE_TZ)
    return local.tz_convert("UTC").tz_localize(None).to_pydatetime()


def normalise_asof(asof: dt.date | dt.datetime | pd.Timestamp | str) -> dt.datetime:
    """A decision time as a naive UTC datetime.

    A date (or a naive midnight) is the close of that day; an aware time is converted to UTC;
    another naive time is taken as UTC.
    """
    ts = pd.Timestamp(asof)
    if ts.tzinfo is not None:
        return ts.tz_convert("UTC").tz_localize(None).to_pydatetime()
    if ts == ts.normalize():
        return decision_time(ts)
    return ts.to_pydatetime()


def _price_day(asof_utc: dt.datetime) -> pd.Timestamp:
    """The last day whose bar is known at ``asof_utc`` (the day itself once it has closed)."""
    local = pd.Timestamp(asof_utc).tz_localize("UTC").tz_convert(_EXCHANGE_TZ)
    day = local.tz_localize(None).normalize()
    if pd.Timestamp(asof_utc) >= pd.Timestamp(decision_time(day)):
        return day
    return day - pd.Timedelta(days=1)


def cut_at(data: MarketData, asof: dt.datetime) -> MarketData:
    """The data known at the decision time ``asof`` (naive UTC, see :func:`normalise_asof`)."""
    day = _price_day(asof)
    cut = data.truncate(day)  # bars, benchmark, factors and filings up to the last closed day
    news = data.news
    if news is not None:
        news = news[pd.to_datetime(news["published_at"]) < pd.Timestamp(asof)]
    return dataclasses.replace(cut, news=news)


# ---- the runner -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CheckedRequest:
    """A request that passed :meth:`ToolRunner.check`, with its tool and provider resolved."""

    tool: Tool
    provider: ProviderSpec
    request: ToolRequest  # provider resolved, asof normalised


class ToolRunner:
    """Runs tool calls with checks, a timeout, a cache and a call log.

    Parameters
    ----------
    store
        Where calls are logged and results cached; None keeps the cache in memory only and logs
        nothing.
    run_id
        Stamped on every result and ``tool_calls`` row (None: a call outside a run).
    timeout_s
        Wall-clock limit of one call (None: no limit). A call past it returns an error result;
        the worker thread is abandoned (Python cannot kill a thread) and its answer discarded.
    extra_dirs
        Extra tool folders (config ``tools.extra_dirs``).
    tools
        Tools by name, instead of discovery (tests, embedding).
    cache
        Reuse results of deterministic providers (memory, then DuckDB ``tool_cache``).
    batch_size
        Calls buffered before a flush to DuckDB; :meth:`flush`, :meth:`close` or leaving the
        ``with`` block writes the rest.

    Use one runner from one thread.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        run_id: str | None = None,
        timeout_s: float | None = 30.0,
        extra_dirs: Iterable[str | Path] = (),
        tools: Mapping[str, Tool] | None = None,
        cache: bool = True,
        batch_size: int = 500,
        memory_cache_size: int = 100_000,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.timeout_s = timeout_s
        self.extra_dirs = tuple(extra_dirs)
        self.cache = cache
        self.batch_size = max(1, batch_size)
        self.memory_cache_size = memory_cache_size
        self.panel_errors: dict[str, str] = {}
        self._tools = dict(tools) if tools is not None else None
        self._memory: dict[str, dict[str, Any]] = {}
        self._pending_calls: list[dict[str, Any]] = []
        self._pending_cache: dict[str, dict[str, Any]] = {}
        self._validators: dict[str, Any] = {}
        self._stored_keys: dict[tuple[str, str], set[str]] = {}

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> ToolRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Write what is buffered."""
        self.flush()

    # -- lookups ----------------------------------------------------------------------------------

    def tool(self, name: str) -> Tool:
        """The tool called ``name`` (UserInputError listing the valid names if unknown)."""
        if self._tools is None:
            return get_tool(name, self.extra_dirs)
        if name in self._tools:
            return self._tools[name]
        hint = closest(name, list(self._tools))
        suggestion = f" (did you mean {hint}?)" if hint else ""
        raise UserInputError(
            f"unknown tool '{name}'{suggestion}; tools: {', '.join(sorted(self._tools))}"
        )

    def _validate_arguments(self, tool: Tool, arguments: Mapping[str, Any]) -> None:
        from jsonschema import ValidationError
        from jsonschema.validators import validator_for

        name = tool.spec.name
        validator = self._validators.get(name)
        if validator is None:
            schema = tool.spec.parameters
            validator = validator_for(schema)(schema)
            self._validators[name] = validator
        try:
            validator.validate(dict(arguments))
        except ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(arguments)"
            allowed = ", ".join(sorted(tool.spec.parameters.get("properties", {}))) or "none"
            raise UserInputError(
                f"invalid arguments for tool {name} at {where}: {exc.message} "
                f"(allowed arguments: {allowed})"
            ) from None

    def check(self, request: ToolRequest, data: MarketData) -> CheckedRequest:
        """Resolve and validate a request against the data; raise what is wrong.

        Raises
        ------
        UserInputError
            Unknown tool or provider, invalid arguments.
        UnknownTickerError
            The data holds no bar for the ticker.
        DateRangeError
            ``asof`` is before the ticker's first bar or after the last session available.
        """
        tool = self.tool(request.tool)
        provider = resolve_provider(tool, request.provider)
        self._validate_arguments(tool, request.arguments)
        asof = normalise_asof(request.asof)
        check_asof(data, request.ticker, asof)
        normalised = request.model_copy(update={"provider": provider.name, "asof": asof})
        return CheckedRequest(tool, provider, normalised)

    # -- single calls -------------------------------------------------------------------------------

    def run(self, request: ToolRequest, data: MarketData) -> ToolResult:
        """Answer one call; never raises for a problem with the call (see the module docs)."""
        return self.run_many([request], data)[0]

    def run_many(self, requests: Sequence[ToolRequest], data: MarketData) -> list[ToolResult]:
        """Answer several calls on the same data, in order, with one cache lookup for all.

        Each result is what :meth:`run` gives for its request.
        """
        results: list[ToolResult | None] = [None] * len(requests)
        todo: list[tuple[int, CheckedRequest, MarketData, str | None, float]] = []
        for i, request in enumerate(requests):
            started = time.perf_counter()
            try:
                checked = self.check(request, data)
            except QuantorchError as exc:
                results[i] = self._failure(request, f"rejected: {exc}", cost=0.0, started=started,
                                           kind="input")
                self._record(results[i], request.arguments)
                continue
            cut = cut_at(data, checked.request.asof)
            key = None
            if self.cache and checked.provider.deterministic:
                key = self._cache_key(checked, cut)
            todo.append((i, checked, cut, key, (time.perf_counter() - started) * 1000))
        lookup_started = time.perf_counter()
        wanted = [(key, c.request.tool, c.provider.name) for _, c, _, key, _ in todo if key is not None]
        cached = self._lookup(wanted)
        # a call's latency: its checks, cut and key, plus its tool run or its share of the lookup
        lookup_ms = (time.perf_counter() - lookup_started) * 1000 / max(1, len(wanted))
        for i, checked, cut, key, prepared_ms in todo:
            request = checked.request
            if key is not None and key in cached:
                result = _from_payload(cached[key], request, self.run_id, prepared_ms + lookup_ms)
            else:
                result = self._execute(checked, cut, prepared_ms)
                if key is not None and result.error is None:
                    self._remember(key, result)
                    cached[key] = self._memory[key]
            results[i] = result
            self._record(result, request.arguments)
        return [r for r in results if r is not None]

    def _execute(self, checked: CheckedRequest, cut: MarketData, prepared_ms: float) -> ToolResult:
        request, provider, tool = checked.request, checked.provider, checked.tool
        started = time.perf_counter() - prepared_ms / 1000
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = tool.run(request, cut, provider)
            except BaseException as exc:  # noqa: BLE001 - any fault becomes an error result
                outcome["error"] = exc

        if self.timeout_s is None:
            work()
        else:
            worker = threading.Thread(
                target=work, name=f"tool-{request.tool}-{request.ticker}", daemon=True
            )
            worker.start()
            worker.join(self.timeout_s)
            if worker.is_alive():
                return self._failure(
                    request,
                    f"timeout: {request.tool}:{provider.name} took longer than {self.timeout_s:g}s",
                    cost=provider.usd_per_call,
                    started=started,
                    kind="temporary",
                )
        latency_ms = (time.perf_counter() - started) * 1000
        if "error" in outcome:
            exc = outcome["error"]
            # a temporary failure (network, endpoint down) is worth retrying; a setting the tool
            # needs is the operator's to fix; anything else is a fault of the tool
            kind: ErrorKind = (
                "temporary" if isinstance(exc, RetryableError)
                else "input" if isinstance(exc, UserInputError)
                else "tool"
            )
            label = {"temporary": "temporary failure", "input": "bad setting", "tool": "tool fault"}
            return self._failure(
                request,
                f"{label[kind]}: {request.tool}:{provider.name} raised {type(exc).__name__}: {exc}",
                cost=provider.usd_per_call,
                started=started,
                kind=kind,
            )
        try:
            return self._conform(outcome.get("result"), checked, latency_ms)
        except PluginError as exc:
            return self._failure(request, f"tool fault: {exc}", cost=provider.usd_per_call,
                                 started=started)

    def _conform(self, result: object, checked: CheckedRequest, latency_ms: float) -> ToolResult:
        """The tool's answer, checked against its spec and stamped by the runner."""
        request, tool = checked.request, checked.tool
        if not isinstance(result, ToolResult):
            raise PluginError(
                f"{request.tool}:{checked.provider.name} returned {type(result).__name__}, "
                "not a ToolResult"
            )
        names = tool.spec.output_names
        unknown = sorted(set(result.features) - set(names))
        if unknown:
            raise PluginError(
                f"{request.tool}:{checked.provider.name} returned features {unknown} that its "
                "spec does not declare"
            )
        features = {n: _as_float(result.features.get(n, math.nan)) for n in names}
        return result.model_copy(
            update={
                "tool": request.tool,
                "provider": checked.provider.name,
                "ticker": request.ticker,
                "asof": request.asof,
                "features": features,
                "latency_ms": latency_ms,
                "cache_hit": False,
                "run_id": self.run_id,
            }
        )

    def _failure(
        self, request: ToolRequest, error: str, *, cost: float, started: float,
        kind: ErrorKind = "tool",
    ) -> ToolResult:
        # the text goes to tool_calls, summaries and stderr: an exception's message may carry a
        # URL with credentials or an echoed Authorization header
        error = redact(error)
        names: tuple[str, ...] = ()
        provider = request.provider or ""
        try:
            spec = self.tool(request.tool).spec
            names = spec.output_names
            provider = provider or spec.default_provider
        except QuantorchError:
            pass
        try:
            asof = normalise_asof(request.asof)
        except (ValueError, TypeError):
            asof = request.asof
        return ToolResult(
            tool=request.tool,
            provider=provider,
            ticker=request.ticker,
            asof=asof,
            features={n: math.nan for n in names},
            summary=f"{request.tool} failed for {request.ticker}: {error}",
            coverage=False,
            cost_usd=cost,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=error,
            error_kind=kind,
            run_id=self.run_id,
        )

    # -- cache ------------------------------------------------------------------------------------

    def _cache_key(self, checked: CheckedRequest, cut: MarketData) -> str:
        request = checked.request
        blob = json.dumps(
            {
                "tool": request.tool,
                "provider": checked.provider.name,
                "version": checked.tool.spec.version,
                "ticker": request.ticker,
                "asof": request.asof.isoformat(),
                "arguments": request.arguments,
                "data": data_fingerprint(cut, request.ticker),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def _lookup(self, wanted: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
        """Cached payloads of the (key, tool, provider) asked: memory, then ``tool_cache``.

        The keys the file holds for a (tool, provider) are read once per runner (a snapshot,
        so a miss never opens the file: opening DuckDB costs more than most local tools), and
        the payloads of all hits come in one query.
        """
        found = {k: self._memory[k] for k, _, _ in wanted if k in self._memory}
        missing = [(k, t, p) for k, t, p in wanted if k not in found]
        if not missing or self.store is None or not self.store.exists:
            return found
        pairs = sorted({(t, p) for _, t, p in missing} - set(self._stored_keys))
        if pairs:
            with self.store.connect(read_only=True) as con:
                for tool, provider in pairs:
                    rows = con.execute(
                        "SELECT cache_key FROM tool_cache WHERE tool = ? AND provider = ?",
                        [tool, provider],
                    ).fetchall()
                    self._stored_keys[(tool, provider)] = {r[0] for r in rows}
        stored = sorted({k for k, t, p in missing if k in self._stored_keys[(t, p)]})
        if not stored:
            return found
        with self.store.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT cache_key, payload FROM tool_cache WHERE cache_key IN (SELECT unnest(?))",
                [stored],
            ).fetchall()
        for key, payload in rows:
            found[key] = json.loads(payload)
            self._memorise(key, found[key])
        return found

    def _memorise(self, key: str, payload: dict[str, Any]) -> None:
        if len(self._memory) >= self.memory_cache_size:
            self._memory.pop(next(iter(self._memory)))
        self._memory[key] = payload

    def _remember(self, key: str, result: ToolResult) -> None:
        payload = {
            "features": {k: _json_float(v) for k, v in result.features.items()},
            "summary": result.summary,
            "coverage": result.coverage,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
        }
        self._memorise(key, payload)
        if self.store is not None:
            self._pending_cache[key] = {
                "cache_key": key,
                "tool": result.tool,
                "provider": result.provider,
                "payload": json.dumps(payload),
                "created_at": _utcnow(),
            }

    # -- the call log ---------------------------------------------------------------------------

    def _record(self, result: ToolResult, arguments: Mapping[str, Any]) -> None:
        if self.store is None:
            return
        self._pending_calls.append(
            {
                "call_id": uuid.uuid4().hex,
                "run_id": result.run_id,
                "tool": result.tool,
                "provider": result.provider,
                "ticker": result.ticker,
                "as_of": _naive_utc(result.asof),
                "arguments": json.dumps(dict(arguments), sort_keys=True, default=str),
                "outputs": json.dumps({k: _json_float(v) for k, v in result.features.items()}),
                "summary": result.summary,
                "coverage": result.coverage,
                "cost_usd": result.cost_usd,
                "latency_ms": result.latency_ms,
                "cache_hit": result.cache_hit,
                "error": result.error,
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "created_at": _utcnow(),
            }
        )
        if len(self._pending_calls) >= self.batch_size:
            self.flush()

    def flush(self) -> int:
        """Write the buffered calls and cache entries in one transaction; rows written."""
        if self.store is None or not (self._pending_calls or self._pending_cache):
            return 0
        calls = pd.DataFrame(self._pending_calls, columns=list(_CALL_COLUMNS))
        entries = pd.DataFrame(list(self._pending_cache.values()), columns=list(_CACHE_COLUMNS))
        calls = calls.astype({"input_tokens": "Int64", "output_tokens": "Int64"})
        with self.store.transaction() as con:
            if len(calls):
                con.register("pending_calls", calls)
                columns = ", ".join(_CALL_COLUMNS)
                selected = ", ".join(
                    f"CAST({c} AS JSON)" if c in ("arguments", "outputs") else c
                    for c in _CALL_COLUMNS
                )
                con.execute(f"INSERT INTO tool_calls ({columns}) SELECT {selected} FROM pending_calls")
                con.unregister("pending_calls")
            if len(entries):
                con.register("pending_cache", entries)
                con.execute(
                    """
                    INSERT OR IGNORE INTO tool_cache (cache_key, tool, provider, payload, created_at)
                    SELECT cache_key, tool, provider, CAST(payload AS JSON), created_at
                    FROM pending_cache
                    """
                )
                con.unregister("pending_cache")
        written = len(calls) + len(entries)
        self._pending_calls.clear()
        self._pending_cache.clear()
        return written

    # -- panels -----------------------------------------------------------------------------------

    def panel(
        self,
        tool: str | Tool,
        provider: str | None,
        data: MarketData,
        tickers: Sequence[str],
        dates: Sequence[Any] | pd.DatetimeIndex,
        *,
        on_error: Literal["nan", "raise"] = "nan",
    ) -> dict[str, pd.DataFrame]:
        """The provider's features for ``tickers`` x ``dates`` at once: name -> (dates x tickers).

        The value at (date d, ticker) is what a single call with ``asof`` d (the close of d)
        returns: the tool's value at the last session on or before d. Panels are for backtests
        and training: they are neither cached nor logged (a backtest logs the calls its
        orchestrator actually makes). A tool fault gives all-NaN frames and is kept in
        :attr:`panel_errors` (``on_error="raise"``: :class:`PluginError`).
        """
        resolved = self.tool(tool) if isinstance(tool, str) else tool
        spec = resolved.spec
        provider_spec = resolve_provider(resolved, provider)
        names = spec.provider_outputs(provider_spec.name)
        tickers = list(tickers)
        wanted = pd.DatetimeIndex(pd.to_datetime(list(dates))).normalize()
        sessions = data.prices.dates
        known = [t for t in tickers if t in data.prices.close.columns]
        if tickers and not known:
            raise UnknownTickerError(
                f"none of the tickers {tickers[:5]}{'...' if len(tickers) > 5 else ''} has "
                "price data here; load them first"
            )
        check_panel_dates(data, known, wanted)
        position = sessions.searchsorted(wanted, side="right") - 1
        needed = pd.DatetimeIndex(sessions[np.unique(position[position >= 0])])
        key = f"{spec.name}:{provider_spec.name}"
        try:
            frames = resolved.panel(data, provider_spec, tickers, needed)
            out = {}
            for name in names:
                if name not in frames:
                    raise PluginError(f"{key} panel did not return the feature '{name}'")
                frame = frames[name].reindex(index=needed, columns=tickers).astype("float64")
                values = np.full((len(wanted), len(tickers)), np.nan)
                rows = position >= 0
                values[rows] = frame.to_numpy()[needed.get_indexer(sessions[position[rows]])]
                out[name] = pd.DataFrame(values, index=wanted, columns=tickers, copy=False)
            self.panel_errors.pop(key, None)
            return out
        except Exception as exc:
            message = f"{key} panel failed: {type(exc).__name__}: {exc}"
            if on_error == "raise":
                raise PluginError(message) from exc
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            self.panel_errors[key] = message
            return {
                name: pd.DataFrame(np.nan, index=wanted, columns=tickers) for name in names
            }


# ---- checks -------------------------------------------------------------------------------------


def check_asof(data: MarketData, ticker: str, asof: dt.datetime) -> None:
    """Raise unless ``ticker`` has bars and ``asof`` (naive UTC) lies within them.

    ``asof`` may not precede the ticker's first bar, nor need a session after its last bar (an
    XNYS session between the last bar and ``asof``'s last closed day means the data is stale).
    """
    close = data.prices.close
    if ticker not in close.columns:
        hint = closest(ticker, [str(c) for c in close.columns])
        suggestion = f" (did you mean {hint}?)" if hint else ""
        raise UnknownTickerError(
            f"no price data for ticker '{ticker}'{suggestion}; load it first "
            "(quantorch data fetch --tickers ...)"
        )
    bars = close[ticker].dropna().index
    if len(bars) == 0:
        raise UnknownTickerError(f"no price bars for ticker '{ticker}' in the data loaded")
    first, last = bars[0], bars[-1]
    day = _price_day(asof)
    span = f"the {ticker} data runs from {first.date()} to {last.date()}"
    if day < first:
        raise DateRangeError(f"asof {format_asof(asof)} is before the first {ticker} bar; {span}")
    if day > last and _sessions_between(last, day):
        raise DateRangeError(
            f"asof {format_asof(asof)} is after the last {ticker} session available; {span} "
            "(fetch newer data or pick an earlier --asof)"
        )


def check_panel_dates(data: MarketData, tickers: Sequence[str], dates: pd.DatetimeIndex) -> None:
    """Raise if ``dates`` start before any bar of ``tickers`` or run past the data's end."""
    if len(dates) == 0 or not tickers:
        return
    close = data.prices.close[list(tickers)]
    has_bar = close.notna().any(axis=1)
    if not has_bar.any():
        raise UnknownTickerError("no price bars for these tickers in the data loaded")
    first, last = close.index[has_bar.to_numpy()][[0, -1]]
    span = f"the data runs from {first.date()} to {last.date()}"
    if dates.min() < first:
        raise DateRangeError(f"panel dates start {dates.min().date()}, before the first bar; {span}")
    if dates.max() > last and _sessions_between(last, dates.max()):
        raise DateRangeError(f"panel dates run to {dates.max().date()}, after the last session; {span}")


def _sessions_between(last: pd.Timestamp, day: pd.Timestamp) -> bool:
    """Is there an XNYS session in (last, day]?"""
    from quantorch.data import calendar

    return len(calendar.sessions(last + pd.Timedelta(days=1), day)) > 0


def data_fingerprint(data: MarketData, ticker: str) -> str:
    """A digest of what a call about ``ticker`` can read: its bars, the benchmark, the factor
    ETFs, its filings and its news (the cache key includes it, so new or corrected data, or a
    different history window, never reuses a stale answer)."""
    digest = hashlib.blake2b(digest_size=16)
    prices = data.prices
    digest.update(prices.dates.asi8.tobytes())
    for frame in (prices.close, prices.open, prices.high, prices.low, prices.volume):
        if ticker in frame.columns:
            digest.update(np.ascontiguousarray(frame[ticker].to_numpy(dtype=np.float64)).tobytes())
    if data.benchmark is not None:
        digest.update(np.ascontiguousarray(data.benchmark.to_numpy(dtype=np.float64)).tobytes())
        digest.update(pd.DatetimeIndex(data.benchmark.index).asi8.tobytes())
    if data.factors is not None:
        digest.update(np.ascontiguousarray(data.factors.to_numpy(dtype=np.float64)).tobytes())
        digest.update(",".join(map(str, data.factors.columns)).encode())
    for table in (data.fundamentals, data.news):
        if table is not None and "ticker" in table.columns:
            rows = table[table["ticker"] == ticker]
            if len(rows):
                digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
    return digest.hexdigest()


# ---- helpers ------------------------------------------------------------------------------------


def _from_payload(
    payload: dict[str, Any], request: ToolRequest, run_id: str | None, latency_ms: float
) -> ToolResult:
    return ToolResult(
        tool=request.tool,
        provider=request.provider or "",
        ticker=request.ticker,
        asof=request.asof,
        features={k: _as_float(v) for k, v in payload["features"].items()},
        summary=payload["summary"],
        coverage=payload["coverage"],
        cost_usd=0.0,
        latency_ms=latency_ms,
        cache_hit=True,
        input_tokens=payload.get("input_tokens"),
        output_tokens=payload.get("output_tokens"),
        run_id=run_id,
    )


def _as_float(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number


def _json_float(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def format_asof(asof: dt.datetime) -> str:
    """A decision time for people: ``2021-03-01 (close)`` or the New York wall time."""
    local = pd.Timestamp(asof).tz_localize("UTC").tz_convert(_EXCHANGE_TZ)
    if local.time() == CLOSE_TIME:
        return f"{local.date()} (close)"
    return f"{local.strftime('%Y-%m-%d %H:%M')} New York"


def _naive_utc(value: dt.datetime) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
