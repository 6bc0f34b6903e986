"""Tool discovery: the built-in modules of ``quantorch.tools`` plus extra tool folders.

A tool is one module that defines a module-level ``TOOL`` object implementing the
:class:`~quantorch.toolkit.spec.Tool` protocol. Adding a tool is writing that module (in
``tools/`` or in a folder named by ``tools.extra_dirs`` in the config); nothing else changes.
Modules whose name starts with ``_`` are helpers and are not scanned.

Discovery is strict, because a tool that silently disappears is worse than one that refuses to
load: a module that fails to import, defines no ``TOOL``, has a malformed spec (an invalid
JSON schema) or reuses another tool's name raises :class:`~quantorch.errors.PluginError`
naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path

from quantorch.errors import PluginError, UserInputError, did_you_mean
from quantorch.toolkit.spec import ProviderSpec, Tool, ToolSpec

__all__ = [
    "available_tools",
    "get_tool",
    "all_tools",
    "discover",
    "resolve_provider",
    "clear_cache",
]

_BUILTIN = "quantorch.tools"
_USER_PACKAGE = "quantorch_user_tools"


def _check(tool: object, origin: str) -> Tool:
    spec = getattr(tool, "spec", None)
    if not isinstance(spec, ToolSpec) or not callable(getattr(tool, "run", None)) or not callable(
        getattr(tool, "panel", None)
    ):
        raise PluginError(
            f"tool module {origin}: TOOL must have a ToolSpec 'spec' and 'run' and 'panel' "
            "methods (see docs/tools.md)"
        )
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(spec.parameters).check_schema(spec.parameters)
    except SchemaError as exc:
        raise PluginError(
            f"tool module {origin}: spec.parameters of '{spec.name}' is not a valid JSON schema: "
            f"{exc.message}"
        ) from exc
    if spec.parameters.get("type") != "object":
        raise PluginError(
            f"tool module {origin}: spec.parameters of '{spec.name}' must be a JSON schema of "
            "type 'object' (the call's arguments besides ticker and asof)"
        )
    return tool  # type: ignore[return-value]


def _load_file(path: Path) -> object:
    # a digest of the folder keeps two folders' same-named modules apart in sys.modules
    digest = hashlib.sha1(str(path.parent).encode()).hexdigest()[:8]
    name = f"{_USER_PACKAGE}.{path.stem}_{digest}"
    try:
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError("not a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise PluginError(
            f"tool module {path} failed to import: {type(exc).__name__}: {exc} (fix or remove it)"
        ) from exc
    return _tool_of(module, str(path))


def _tool_of(module: object, origin: str) -> object:
    tool = getattr(module, "TOOL", None)
    if tool is None:
        raise PluginError(
            f"tool module {origin} defines no TOOL object (see docs/tools.md; name helper "
            "modules with a leading underscore so discovery skips them)"
        )
    return tool


@functools.cache
def _discover(extra_dirs: tuple[str, ...]) -> dict[str, Tool]:
    import quantorch.tools as package

    found: dict[str, Tool] = {}
    origins: dict[str, str] = {}

    def add(tool: object, origin: str) -> None:
        checked = _check(tool, origin)
        name = checked.spec.name
        if name in found:
            raise PluginError(
                f"tool name '{name}' is defined twice: in {origins[name]} and in {origin} "
                "(rename one)"
            )
        found[name] = checked
        origins[name] = origin

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        qualified = f"{_BUILTIN}.{info.name}"
        try:
            module = importlib.import_module(qualified)
        except Exception as exc:
            where = Path(package.__path__[0]) / f"{info.name}.py"
            raise PluginError(
                f"tool module {where} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        add(_tool_of(module, qualified), getattr(module, "__file__", None) or qualified)
    for folder in extra_dirs:
        path = Path(folder)
        if not path.is_dir():
            raise UserInputError(
                f"tools.extra_dirs: folder {path} does not exist (fix the path in the config)"
            )
        for file in sorted(path.glob("*.py")):
            if not file.name.startswith("_"):
                add(_load_file(file), str(file))
    return found


def discover(extra_dirs: Iterable[str | Path] = ()) -> dict[str, Tool]:
    """Name -> tool for every built-in tool and every tool module in ``extra_dirs``.

    Results are cached per set of folders for the life of the process; :func:`clear_cache`
    forgets them (e.g. after editing a plugin in a long-running session).
    """
    return dict(_discover(tuple(str(Path(d).expanduser().resolve()) for d in extra_dirs)))


def clear_cache() -> None:
    """Forget discovered tools; the next lookup scans the folders again."""
    _discover.cache_clear()


def available_tools(extra_dirs: Iterable[str | Path] = ()) -> list[str]:
    """Names of all tools, sorted."""
    return sorted(discover(extra_dirs))


def all_tools(extra_dirs: Iterable[str | Path] = ()) -> list[Tool]:
    """Every tool, sorted by name."""
    tools = discover(extra_dirs)
    return [tools[name] for name in sorted(tools)]


def get_tool(name: str, extra_dirs: Iterable[str | Path] = ()) -> Tool:
    """The tool called ``name``; an unknown name lists the valid ones.

    Raises
    ------
    UserInputError
        No tool has that name; the message suggests the closest one and lists them all.
    """
    tools = discover(extra_dirs)
    if name in tools:
        return tools[name]
    suggestion = did_you_mean(name, list(tools))
    raise UserInputError(f"unknown tool '{name}'{suggestion}; tools: {', '.join(sorted(tools))}")


def resolve_provider(tool: Tool, name: str | None) -> ProviderSpec:
    """The provider ``name`` of ``tool`` (its default for None); an unknown name lists the valid.

    Raises
    ------
    UserInputError
        The tool has no such provider; the message lists its providers.
    """
    try:
        return tool.spec.provider(name)
    except KeyError:
        valid = [p.name for p in tool.spec.providers]
        suggestion = did_you_mean(name or "", valid)
        raise UserInputError(
            f"unknown provider '{name}' for tool {tool.spec.name}{suggestion}; "
            f"providers: {', '.join(valid)}"
        ) from None
