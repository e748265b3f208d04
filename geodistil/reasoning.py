"""Separating a reply's reasoning from its content.

Servers return the thinking three ways: a ``reasoning_content`` or ``reasoning`` field beside
the content (vLLM and SGLang with a reasoning parser, some gateways), ``<think>...</think>`` in
the content (no reasoning parser), or only a closing ``</think>`` with the thinking before it
(templates such as Qwen3.5's put the opening tag in the prompt). The rollout moves all of it
into the message's ``reasoning``, so tool calls and the answer are read from what follows the
thinking: a ``<tool_call>`` or ``\\boxed{}`` the teacher only considered does not count.
"""

from __future__ import annotations

import re

OPEN, CLOSE = "<think>", "</think>"
_BLOCK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)  # unclosed: thinking cut off by max_tokens


def separate(content: str | None, reasoning: str | None = None) -> tuple[str | None, str]:
    """(reasoning, content after it): the reasoning field first, then the thinking in the content."""
    text = content or ""
    thoughts = [reasoning.strip()] if reasoning and reasoning.strip() else []
    if OPEN not in text and CLOSE not in text:  # the content is kept exactly as the teacher wrote it
        return ("\n\n".join(thoughts) or None), text
    close = text.find(CLOSE)
    if close >= 0 and OPEN not in text[:close]:  # the opening tag was in the prompt
        thoughts.append(text[:close].strip())
        text = text[close + len(CLOSE):]
    thoughts += [m.group(1).strip() for m in _BLOCK.finditer(text)]
    text = _BLOCK.sub("", text)
    thoughts = [t for t in thoughts if t]
    return ("\n\n".join(thoughts) or None), text.strip()
