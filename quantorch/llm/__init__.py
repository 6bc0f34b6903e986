"""The LLM port and its OpenAI-compatible adapter (see :mod:`quantorch.llm.port`).

Importing this package is cheap: ``httpx`` is loaded on the first request.
"""

from quantorch.llm.client import OpenAIChatModel, chat_sync
from quantorch.llm.port import ChatModel, ChatReply, LLMError, ToolCall, Usage
from quantorch.llm.settings import LLMSettings

__all__ = [
    "ChatModel",
    "ChatReply",
    "LLMError",
    "LLMSettings",
    "OpenAIChatModel",
    "ToolCall",
    "Usage",
    "chat_sync",
]
