"""Tool discovery: the built-in modules of ``quantorch.tools`` plus extra tool folders.

A tool is one module that defines a module-level ``TOOL`` object implementing the
:class:`~quantorch.toolkit.spec.Tool` protocol. Adding a tool is writing that module (in
``tools/`` or in a folder named by ``tools.extra_dirs`` in the config); nothing else changes.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from quantorch.errors import PluginError, UserInputError, closest
from quantorch.toolkit.spec import Tool, ToolSpec

__all__ = ["available_tools", "get_tool", "all_tools", "discover"]

_BUILTIN = "quantorch.tools"


def _check(tool: object, origin: str) -> Tool:
    spec = getattr(tool, "spec", None)
    if not isinstance(spec, ToolSpec) or not callable(getattr(tool, "run", None)) or not callable(
        getattr(tool, "panel", None)
    ):
        raise PluginError(
            f"tool module {origin}: TOOL must have a ToolSpec 'spec' and 'run' and 'panel' "
            "methods (see docs/tools.md)"
        )
    return tool  # type: ignore[return-value]


def _load_file(path: Path) -> object | None:
    name = f"quantorch_user_tools.{path.stem}"
    try:
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError("not a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"tool module {path} failed to import: {exc!r} (fix or remove it)") from exc
    return getattr(module, "TOOL", None)


@functools.cache
def _discover(extra_dirs: tuple[str, ...]) -> dict[str, Tool]:
    import quantorch.tools as package

    found: dict[str, Tool] = {}

    def add(tool: object | None, origin: str) -> None:
        if tool is None:
            return
        checked = _check(tool, origin)
        name = checked.spec.name
        if name in found:
            raise PluginError(f"tool name '{name}' is defined twice (again in {origin})")
        found[name] = checked

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        qualified = f"{_BUILTIN}.{info.name}"
        try:
            module = importlib.import_module(qualified)
        except Exception as exc:
            raise PluginError(f"tool module {qualified} failed to import: {exc!r}") from exc
        add(getattr(module, "TOOL", None), qualified)
    for folder in extra_dirs:
        path = Path(folder)
        if not path.is_dir():
            raise UserInputError(f"tools.extra_dirs: folder {path} does not exist")
        for file in sorted(path.glob("*.py")):
            if not file.name.startswith("_"):
                add(_load_file(file), str(file))
    return found


def discover(extra_dirs: Iterable[str | Path] = ()) -> dict[str, Tool]:
    """Name -> tool for every built-in tool and every tool module in ``extra_dirs``."""
    return dict(_discover(tuple(str(Path(d).resolve()) for d in extra_dirs)))


def available_tools(extra_dirs: Sequence[str | Path] = ()) -> list[str]:
    """Names of all tools, sorted."""
    return sorted(discover(extra_dirs))


def all_tools(extra_dirs: Sequence[str | Path] = ()) -> list[Tool]:
    tools = discover(extra_dirs)
    return [tools[name] for name in sorted(tools)]


def get_tool(name: str, extra_dirs: Sequence[str | Path] = ()) -> Tool:
    """The tool called ``name``; an unknown name lists the valid ones."""
    tools = discover(extra_dirs)
    if name in tools:
        return tools[name]
    hint = closest(name, list(tools))
    suggestion = f" (did you mean {hint}?)" if hint else ""
    raise UserInputError(f"unknown tool '{name}'{suggestion}; tools: {', '.join(sorted(tools))}")
