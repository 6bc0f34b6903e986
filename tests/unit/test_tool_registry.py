"""Tool discovery: built-ins, plugin folders (the docs' worked example), strict errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from quantorch.errors import PluginError, UserInputError
from quantorch.toolkit import registry
from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import Tool, ToolRequest
from tests._tool_data import same, stock_market

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tools.md"


@pytest.fixture(autouse=True)
def _fresh_discovery():
    registry.clear_cache()
    yield
    registry.clear_cache()


def docs_example() -> str:
    """The complete example module of docs/tools.md ("A complete example ...")."""
    text = DOCS.read_text(encoding="utf-8")
    after = text[text.index("A complete example"):]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def test_builtin_tools_are_discovered_and_well_formed():
    names = registry.available_tools()
    assert {"technical", "risk"} <= set(names)
    for tool in registry.all_tools():
        assert isinstance(tool, Tool)
        spec = tool.spec
        assert spec.description and spec.outputs
        for provider in spec.providers:
            assert provider.expected_cost_usd > 0, f"{spec.name}:{provider.name} must have a price"
            assert provider.expected_latency_ms > 0
        json.dumps(spec.openai_tool())
    technical = registry.get_tool("technical")
    assert [p.name for p in technical.spec.providers] == ["basic", "full"]
    assert [p.name for p in registry.get_tool("risk").spec.providers] == ["fast", "full"]


def test_unknown_tool_suggests_and_lists():
    with pytest.raises(UserInputError, match=r"unknown tool 'technicl' \(did you mean technical\?\); tools: .*risk"):
        registry.get_tool("technicl")


def test_unknown_provider_lists_the_valid_ones():
    tool = registry.get_tool("risk")
    assert registry.resolve_provider(tool, None).name == "fast"
    with pytest.raises(UserInputError, match=r"unknown provider 'ful' for tool risk \(did you mean full\?\); providers: fast, full"):
        registry.resolve_provider(tool, "ful")


def test_the_docs_example_is_a_working_plugin(tmp_path):
    folder = tmp_path / "my_tools"
    folder.mkdir()
    (folder / "momentum.py").write_text(docs_example(), encoding="utf-8")
    (folder / "_helpers.py").write_text("raise RuntimeError('helpers are not scanned')\n")
    assert "momentum" not in registry.available_tools()
    assert "momentum" in registry.available_tools([folder])
    tool = registry.get_tool("momentum", [folder])

    data = stock_market()
    runner = ToolRunner(None, cache=False, extra_dirs=[folder])
    asof = pd.Timestamp("2021-03-01")
    result = runner.run(ToolRequest(tool="momentum", ticker="AAPL", asof=asof), data)
    assert result.error is None and result.coverage and result.cost_usd == 0.0002
    close = data.prices.close["AAPL"]
    expected = close.shift(21).loc[asof] / close.shift(252).loc[asof] - 1
    assert result.features["mom_12_1"] == pytest.approx(expected)
    assert "12-1 month return" in result.summary
    dates = data.prices.dates[(data.prices.dates >= "2020-06-01") & (data.prices.dates <= "2021-06-30")]
    frames = runner.panel(tool, None, data, ["AAPL", "KO"], dates)
    assert same(frames["mom_12_1"].at[asof, "AAPL"], result.features["mom_12_1"])
    assert math.isfinite(frames["off_52w_high"].at[asof, "KO"])


def test_a_plugin_that_fails_to_import_names_its_file(tmp_path):
    (tmp_path / "broken.py").write_text("import numpy as np\nTOOL = np.undefined_thing\n")
    with pytest.raises(PluginError, match=re.escape(str(tmp_path / "broken.py"))):
        registry.available_tools([tmp_path])


def test_a_plugin_with_a_syntax_error_names_its_file(tmp_path):
    (tmp_path / "typo.py").write_text("def oops(:\n")
    with pytest.raises(PluginError, match=r"typo\.py failed to import: SyntaxError"):
        registry.get_tool("technical", [tmp_path])


def test_a_module_without_tool_is_refused(tmp_path):
    (tmp_path / "notes.py").write_text("X = 1\n")
    with pytest.raises(PluginError, match=r"notes\.py defines no TOOL"):
        registry.available_tools([tmp_path])


def test_a_tool_object_of_the_wrong_shape_is_refused(tmp_path):
    (tmp_path / "shape.py").write_text("TOOL = object()\n")
    with pytest.raises(PluginError, match=r"shape\.py: TOOL must have a ToolSpec"):
        registry.available_tools([tmp_path])


def test_two_tools_with_one_name_are_refused(tmp_path):
    source = docs_example().replace('name="momentum"', 'name="technical"')
    (tmp_path / "clash.py").write_text(source)
    with pytest.raises(PluginError, match=r"tool name 'technical' is defined twice: in .*technical\.py and in .*clash\.py"):
        registry.available_tools([tmp_path])


def test_an_invalid_parameters_schema_is_refused(tmp_path):
    source = docs_example().replace(
        "        default_provider=\"basic\",\n",
        "        default_provider=\"basic\",\n        parameters={\"type\": \"object\", "
        "\"properties\": {\"window\": {\"type\": \"integr\"}}},\n",
    )
    (tmp_path / "schema.py").write_text(source)
    with pytest.raises(PluginError, match=r"schema\.py: spec\.parameters of 'momentum' is not a valid JSON schema"):
        registry.available_tools([tmp_path])


def test_a_missing_extra_folder_is_an_input_error(tmp_path):
    with pytest.raises(UserInputError, match=r"tools\.extra_dirs: folder .*nowhere does not exist"):
        registry.available_tools([tmp_path / "nowhere"])


def test_same_module_name_in_two_folders(tmp_path):
    for sub, name in (("a", "alpha"), ("b", "beta")):
        folder = tmp_path / sub
        folder.mkdir()
        (folder / "tool.py").write_text(docs_example().replace('name="momentum"', f'name="{name}"'))
    assert {"alpha", "beta"} <= set(registry.available_tools([tmp_path / "a", tmp_path / "b"]))
