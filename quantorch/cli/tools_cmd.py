"""``quantorch tools list | run NAME``: the analysis tools, their prices, one call."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from quantorch.cli._common import (
    ConfigOpt,
    DbOpt,
    DebugOpt,
    JsonOpt,
    SourceOpt,
    compact_table,
    err,
    guard,
    load,
    new_app,
    open_store,
    out,
    parse_date,
)
from quantorch.errors import DateRangeError, PluginError, RetryableError, UserInputError

tools_app = new_app(
    "Analysis tools: list them with their providers and prices, or run one call.",
)


def _price(provider: Any) -> str:
    """A call's price in a few characters: token-priced providers show their expected bill."""
    if provider.usd_per_1k_input_tokens or provider.usd_per_1k_output_tokens:
        return f"~${provider.expected_cost_usd:.4f}"
    return f"${provider.usd_per_call:g}"


def _spec_json(spec: Any) -> dict[str, Any]:
    payload = spec.model_dump(mode="json")
    for provider, entry in zip(spec.providers, payload["providers"], strict=True):
        entry["expected_cost_usd"] = provider.expected_cost_usd
        entry["outputs"] = list(spec.provider_outputs(provider.name))
    return payload


@tools_app.command("list")
def tools_list(
    json_output: JsonOpt = False,
    openai: Annotated[
        bool, typer.Option("--openai", help="Print the OpenAI `tools` array an LLM orchestrator sends.")
    ] = False,
    config: ConfigOpt = None,
    debug: DebugOpt = False,
) -> None:
    """List every tool with its providers, price per call and expected latency.

    Tools are the modules of the built-in tools package plus those in the config's
    tools.extra_dirs folders (see docs/tools.md).
    """
    with guard(debug):
        if json_output and openai:
            raise UserInputError("--json and --openai print different things: pass one of them")
        from quantorch.toolkit.registry import all_tools

        cfg = load(config, {})
        tools = all_tools(cfg.tools.extra_dirs)
        if openai:
            sys.stdout.write(json.dumps([t.spec.openai_tool() for t in tools], indent=2) + "\n")
            return
        if json_output:
            sys.stdout.write(json.dumps([_spec_json(t.spec) for t in tools]) + "\n")
            return
        table = compact_table("analysis tools (* = default provider)")
        for column in ("tool:provider", "price", "latency", "what it does"):
            table.add_column(column, justify="right" if column in {"price", "latency"} else "left",
                             no_wrap=column != "what it does")
        for tool in tools:
            spec = tool.spec
            for provider in spec.providers:
                default = "*" if provider.name == spec.default_provider else ""
                flags = ", ".join(
                    flag for flag, on in (("online", provider.online),
                                          ("not cached", not provider.deterministic)) if on
                )
                what = provider.description + (f" [{flags}]" if flags else "")
                table.add_row(
                    f"{spec.name}:{provider.name}{default}",
                    _price(provider),
                    f"{provider.expected_latency_ms:g} ms",
                    Text(f"{what}; {len(spec.provider_outputs(provider.name))} outputs"),
                )
        out.print(table)


def _parse_asof(text: str | None) -> dt.date | dt.datetime | None:
    if text is None:
        return None
    try:
        return parse_date(text)
    except DateRangeError:
        pass
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise DateRangeError(
            f"bad --asof '{text}': use YYYY-MM-DD (the close of that day) or an ISO time "
            "such as 2021-03-01T14:30-05:00"
        ) from None


def _parse_arguments(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"--args is not valid JSON ({exc.msg}): pass an object, e.g. '{{}}'") from None
    if not isinstance(value, dict):
        raise UserInputError("--args must be a JSON object, e.g. '{\"window\": 20}'")
    return value


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


@tools_app.command("run")
def tools_run(
    name: Annotated[str, typer.Argument(help="Tool name (see `quantorch tools list`).")],
    ticker: Annotated[str, typer.Option("--ticker", help="Ticker, e.g. AAPL.")],
    asof: Annotated[
        Optional[str],
        typer.Option("--asof", show_default=False,
                     help="Decision time: YYYY-MM-DD is that day's close (default: the latest "
                          "session stored); an ISO time before the close sees the previous bar."),
    ] = None,
    provider: Annotated[
        Optional[str],
        typer.Option("--provider", show_default=False, help="Provider (default: the tool's default)."),
    ] = None,
    arguments: Annotated[
        Optional[str],
        typer.Option("--args", show_default=False, help="Extra arguments as a JSON object."),
    ] = None,
    source: SourceOpt = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run one tool call for a ticker as of a decision time, and print the result and its cost.

    The call sees only data known at --asof, is checked, priced, cached when deterministic (a
    repeat costs nothing) and recorded in the database's tool_calls table.

    Example: quantorch tools run technical --ticker AAPL --asof 2021-03-01 --provider full
    """
    with guard(debug):
        from quantorch.toolkit.market import load_ticker_history
        from quantorch.toolkit.registry import get_tool, resolve_provider
        from quantorch.toolkit.runner import ToolRunner
        from quantorch.toolkit.spec import ToolRequest

        cfg = load(config, {"data.source": source})
        tool = get_tool(name, cfg.tools.extra_dirs)
        provider_spec = resolve_provider(tool, provider)
        extra = _parse_arguments(arguments)
        when = _parse_asof(asof)
        symbol = ticker.strip().upper()
        if not symbol:
            raise UserInputError("--ticker is empty: pass a ticker such as AAPL")
        store = open_store(cfg, db)
        with err.status(f"loading {symbol} from {cfg.data.source}", spinner="dots"):
            # a tool that ranks the ticker within its universe reads the config's universe too
            peers = cfg.universe if getattr(tool, "reads_universe", False) else ()
            market = load_ticker_history(
                store, cfg.data.source, symbol, benchmark=cfg.benchmark_symbol, peers=peers
            )
        if when is None:
            when = market.prices.close[symbol].dropna().index[-1].date()
        request = ToolRequest(tool=tool.spec.name, ticker=symbol, asof=when,
                              provider=provider_spec.name, arguments=extra)
        with ToolRunner(store, timeout_s=cfg.tools.timeout_s, extra_dirs=cfg.tools.extra_dirs) as runner:
            runner.check(request, market)  # a bad request stops here with one clear line
            result = runner.run(request, market)
        if json_output:
            payload = result.model_dump(mode="json")
            payload["features"] = {
                k: (v if math.isfinite(v) else None) for k, v in result.features.items()
            }
            payload["units"] = {f.name: f.unit for f in tool.spec.outputs}
            sys.stdout.write(json.dumps(payload, allow_nan=False) + "\n")
        else:
            _print_result(result, tool.spec)
        if result.error is not None:
            error_type = {"input": UserInputError, "temporary": RetryableError}.get(
                result.error_kind or "tool", PluginError
            )
            raise error_type(result.error)


def _print_result(result: Any, spec: Any) -> None:
    from quantorch.data.calendar import format_asof

    table = Table(title=f"{result.tool}:{result.provider} {result.ticker} as of {format_asof(result.asof)}")
    table.add_column("feature")
    table.add_column("value", justify="right")
    table.add_column("unit")
    units = {f.name: f.unit for f in spec.outputs}
    for key in spec.provider_outputs(result.provider):
        table.add_row(key, _number(result.features.get(key, math.nan)), units.get(key, ""))
    out.print(table)
    out.print(result.summary, highlight=False)
    out.print(
        f"cost ${result.cost_usd:.4f}{' (cache hit)' if result.cache_hit else ''}, "
        f"{result.latency_ms:.1f} ms, coverage {'yes' if result.coverage else 'no'}",
        highlight=False,
    )
