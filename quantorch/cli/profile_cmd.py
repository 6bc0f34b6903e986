"""``quantorch profile list | show NAME | validate FILE``: trader preference profiles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from quantorch.cli._common import DebugOpt, JsonOpt, compact_table, guard, new_app, out

profile_app = new_app(
    "Trader preference profiles: risk limits, style, tool preferences, budget.",
)


def _known_tools() -> list[str] | None:
    try:
        from quantorch.toolkit.registry import available_tools
    except ImportError:
        return None
    return available_tools()


@profile_app.command("list")
def profile_list(json_output: JsonOpt = False, debug: DebugOpt = False) -> None:
    """List the shipped profiles with their style in one line each."""
    with guard(debug):
        from quantorch.orchestrator.profiles import list_profiles, load_profile

        profiles = [load_profile(name) for name in list_profiles()]
        if json_output:
            sys.stdout.write(json.dumps([p.model_dump(mode="json") for p in profiles]) + "\n")
            return
        table = compact_table("trader profiles (configs/traders)")
        table.add_column("name", no_wrap=True)
        for column in ("risk", "hold", "prefers", "budget $", "max pos", "short"):
            table.add_column(column, justify="left" if column == "prefers" else "right")
        for p in profiles:
            prefers = ", ".join(f"{k} {v:g}" for k, v in p.tool_preferences.items()) or "-"
            table.add_row(
                p.name, f"{p.risk_aversion:g}", str(p.holding_period), prefers,
                f"{p.cost_budget_usd:g}", f"{p.limits.max_position:.0%}",
                "yes" if p.limits.allow_short else "no",
            )
        out.print(table)
        out.print("risk = risk aversion; hold = typical holding period (sessions); budget $ = "
                  "tool spend allowed per decision; max pos = largest weight per ticker",
                  style="dim")


@profile_app.command("show")
def profile_show(
    name: Annotated[str, typer.Argument(help="Profile name (see `quantorch profile list`) or YAML path.")],
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show every setting of a profile, defaults included."""
    with guard(debug):
        from quantorch.orchestrator.profiles import load_profile

        profile = load_profile(name, known_tools=_known_tools())
        data = profile.model_dump(mode="json")
        if json_output:
            sys.stdout.write(json.dumps(data) + "\n")
            return
        out.print(f"# {profile.description}")
        out.print(yaml.safe_dump(data, sort_keys=False).rstrip(), highlight=False)


@profile_app.command("validate")
def profile_validate(
    file: Annotated[Path, typer.Argument(help="A profile YAML file to check.")],
    debug: DebugOpt = False,
) -> None:
    """Check a profile file: unknown keys, bad values and unknown tools are refused."""
    with guard(debug):
        from quantorch.orchestrator.profiles import load_profile

        profile = load_profile(file, known_tools=_known_tools())
        out.print(f"ok: profile '{profile.name}' is valid")
