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
   faulty tool cannot crash a backtest; an answer's ``coverage`` is held to the tool's own rule
   (:func:`~quantorch.toolkit.spec.covered`) and an answer without coverage costs nothing
   (:func:`~quantorch.toolkit.spec.charged_cost`);
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

from quantorch.data import calendar
from quantorch.data.calendar import format_asof, normalise_asof, price_day
from quantorch.errors import (
    DateRangeError,
    PluginError,
    QuantorchError,
    RetryableError,
    UnknownTickerError,
    UserInputError,
    did_you_mean,
)
from quantorch.redact import redact
from quantorch.store import Store, repository
from quantorch.toolkit.registry import get_tool, resolve_provider
from quantorch.toolkit.spec import (
    ErrorKind,
    MarketData,
    ProviderSpec,
    Tool,
    ToolRequest,
    ToolResult,
    charged_cost,
    covered,
)

__all__ = [
    "ToolRunner",
    "CheckedRequest",
    "cut_at",
    "check_asof",
    "data_fingerprint",
]

_CALL_COLUMNS = (
    "call_id", "run_id", "tool", "provider", "ticker", "as_of", "arguments", "outputs", "summary",
    "coverage", "cost_usd", "latency_ms", "cache_hit", "error", "input_tokens", "output_tokens",
    "created_at",
)  # fmt: skip
_CACHE_COLUMNS = ("cache_key", "tool", "provider", "payload", "created_at")


def cut_at(data: MarketData, asof: dt.datetime) -> MarketData:
    """The data known at the decision time ``asof`` (naive UTC, see :func:`normalise_asof`)."""
    day = price_day(asof)
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
    log
        Write each call to ``tool_calls`` (False: the caller stores the results itself, e.g. a
        backtest that stores its calls with its run in one transaction; the cache still works).

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
        log: bool = True,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.timeout_s = timeout_s
        self.extra_dirs = tuple(extra_dirs)
        self.cache = cache
        self.batch_size = max(1, batch_size)
        self.memory_cache_size = memory_cache_size
        self.log = log
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
        suggestion = did_you_mean(name, list(self._tools))
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
        cuts: dict[dt.datetime, MarketData] = {}
        for i, request in enumerate(requests):
            started = time.perf_counter()
            try:
                checked = self.check(request, data)
            except QuantorchError as exc:
                results[i] = self._failure(request, f"rejected: {exc}", cost=0.0, started=started,
                                           kind="input")
                self._record(results[i], request.arguments)
                continue
            asof = checked.request.asof
            cut = cuts.get(asof)
            if cut is None:  # one cut per decision time: a session's calls share it
                cut = cuts[asof] = cut_at(data, asof)
            key = None
            if self.cache and checked.provider.deterministic:
                key = self._cache_key(checked, cut)
            todo.append((i, checked, cut, key, (time.perf_counter() - started) * 1000))
        lookup_started = time.perf_counter()
        wanted = [(key, c.request.tool, c.provider.name) for _, c, _, key, _ in todo if key is not None]
        cached = self._lookup(wanted)
        # a call's latency: its checks, cut and key, plus its tool run or its share of the lookup
        lookup_ms = (time.perf_counter() - lookup_started) * 1000 / max(1, len(wanted))
        answered = self._execute_batches(
            [(i, c, cut, ms) for i, c, cut, key, ms in todo if key is None or key not in cached]
        )
        for i, checked, cut, key, prepared_ms in todo:
            request = checked.request
            if key is not None and key in cached:
                result = _from_payload(cached[key], request, self.run_id, prepared_ms + lookup_ms)
            else:
                result = answered[i]
                if key is not None and result.error is None:
                    self._remember(key, result)
                    cached[key] = self._memory[key]
            results[i] = result
            self._record(result, request.arguments)
        return [r for r in results if r is not None]

    def _execute_batches(
        self, items: Sequence[tuple[int, CheckedRequest, MarketData, float]]
    ) -> dict[int, ToolResult]:
        """Run the calls: those of a batching tool (a :class:`~quantorch.toolkit.base.PanelTool`)
        that share provider, decision time and arguments in one computation, the rest alone."""
        groups: dict[tuple, list[tuple[int, CheckedRequest, MarketData, float]]] = {}
        answered: dict[int, ToolResult] = {}
        for item in items:
            _, checked, _, prepared_ms = item
            if getattr(checked.tool, "batches", False):
                request = checked.request
                key = (request.tool, checked.provider.name, request.asof,
                       json.dumps(request.arguments, sort_keys=True, default=str))
                groups.setdefault(key, []).append(item)
            else:
                answered[item[0]] = self._execute(checked, item[2], prepared_ms)
        for group in groups.values():
            if len(group) == 1:
                i, checked, cut, prepared_ms = group[0]
                answered[i] = self._execute(checked, cut, prepared_ms)
                continue
            for (i, _, _, _), result in zip(group, self._execute_batch(group), strict=True):
                answered[i] = result
        return answered

    def _execute_batch(
        self, group: Sequence[tuple[int, CheckedRequest, MarketData, float]]
    ) -> list[ToolResult]:
        """One ``run_batch`` under the timeout; any fault fails each call of the batch alike."""
        _, first, cut, _ = group[0]
        tool, provider = first.tool, first.provider
        requests = [checked.request for _, checked, _, _ in group]
        started = time.perf_counter() - sum(ms for *_, ms in group) / 1000 / len(group)
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["results"] = tool.run_batch(requests, cut, provider)
            except BaseException as exc:  # noqa: BLE001 - any fault becomes error results
                outcome["error"] = exc

        self._run_under_timeout(work, f"tool-{first.request.tool}-batch")
        latency_ms = (time.perf_counter() - started) * 1000 / len(group)
        if not outcome:
            return [
                self._failure(r, f"timeout: {r.tool}:{provider.name} took longer than "
                              f"{self.timeout_s:g}s", cost=provider.usd_per_call,
                              started=started, kind="temporary")
                for r in requests
            ]
        if "error" in outcome:
            return [self._fault(r, provider, outcome["error"], started) for r in requests]
        results = outcome["results"]
        if not isinstance(results, list) or len(results) != len(requests):
            return [self._failure(r, f"tool fault: {r.tool}:{provider.name} run_batch returned "
                                  "the wrong number of results", cost=provider.usd_per_call,
                                  started=started) for r in requests]
        conformed = []
        for (_, checked, _, _), result in zip(group, results, strict=True):
            try:
                conformed.append(self._conform(result, checked, latency_ms))
            except PluginError as exc:
                conformed.append(self._failure(checked.request, f"tool fault: {exc}",
                                               cost=provider.usd_per_call, started=started))
        return conformed

    def _run_under_timeout(self, work, name: str) -> None:
        if self.timeout_s is None:
            work()
            return
        worker = threading.Thread(target=work, name=name, daemon=True)
        worker.start()
        worker.join(self.timeout_s)

    def _fault(self, request: ToolRequest, provider: ProviderSpec, exc: BaseException,
               started: float) -> ToolResult:
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

    def _execute(self, checked: CheckedRequest, cut: MarketData, prepared_ms: float) -> ToolResult:
        request, provider, tool = checked.request, checked.provider, checked.tool
        started = time.perf_counter() - prepared_ms / 1000
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = tool.run(request, cut, provider)
            except BaseException as exc:  # noqa: BLE001 - any fault becomes an error result
                outcome["error"] = exc

        self._run_under_timeout(work, f"tool-{request.tool}-{request.ticker}")
        if not outcome:
            return self._failure(
                request,
                f"timeout: {request.tool}:{provider.name} took longer than {self.timeout_s:g}s",
                cost=provider.usd_per_call,
                started=started,
                kind="temporary",
            )
        latency_ms = (time.perf_counter() - started) * 1000
        if "error" in outcome:
            return self._fault(request, provider, outcome["error"], started)
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
        # coverage as the tool's own rule reads the features (what a panel's point gets), and
        # an answered call without it is not charged; a failed one keeps the provider's bill
        coverage = bool(result.coverage) and bool(covered(tool, checked.provider, features))
        cost = result.cost_usd if result.error else charged_cost(result.cost_usd, coverage)
        return result.model_copy(
            update={
                "tool": request.tool,
                "provider": checked.provider.name,
                "ticker": request.ticker,
                "asof": request.asof,
                "features": features,
                "coverage": coverage,
                "cost_usd": cost,
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
        if self.store is None or not self.log:
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
        with self.store.transaction() as con:
            repository.insert_tool_calls(con, calls)
            repository.put_tool_cache(con, entries)
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
        suggestion = did_you_mean(ticker, [str(c) for c in close.columns])
        raise UnknownTickerError(
            f"no price data for ticker '{ticker}'{suggestion}; load it first "
            "(quantorch data fetch --tickers ...)"
        )
    bars = close[ticker].dropna().index
    if len(bars) == 0:
        raise UnknownTickerError(f"no price bars for ticker '{ticker}' in the data loaded")
    first, last = bars[0], bars[-1]
    day = price_day(asof)
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


def _naive_utc(value: dt.datetime) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
