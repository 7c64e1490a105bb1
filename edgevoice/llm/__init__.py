"""Language-model targets behind one protocol, and the conversation history they share.

The llama.cpp target is imported from ``edgevoice.llm.llama_target`` when needed (it loads
native code); importing this package stays cheap.
"""

from edgevoice.llm.history import Conversation
from edgevoice.llm.protocol import (
    ChatTarget,
    Message,
    PrefixCachingTarget,
    PromptCost,
    StreamStats,
    TargetError,
    TargetInfo,
)

__all__ = [
    "ChatTarget",
    "Conversation",
    "Message",
    "PrefixCachingTarget",
    "PromptCost",
    "StreamStats",
    "TargetError",
    "TargetInfo",
]
