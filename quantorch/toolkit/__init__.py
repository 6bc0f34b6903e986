"""The tool layer: priced, point-in-time analysis tools behind one ToolSpec."""

from quantorch.toolkit.spec import (
    MarketData,
    OutputField,
    ProviderSpec,
    Tool,
    ToolRequest,
    ToolResult,
    ToolSpec,
)

__all__ = [
    "MarketData",
    "OutputField",
    "ProviderSpec",
    "Tool",
    "ToolRequest",
    "ToolResult",
    "ToolSpec",
]
