"""Reading a chat-completion request the way a VLM would: clues, images, offered tools, turn.

Kept cheap because the simulated teacher serves up to about a thousand concurrent requests
on two cores: image sizes come from the image header only (a few KB of base64 decoded, no
pixels), and per-text work is cached on the first user text, which repeats every turn.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from PIL import Image

from geodistil.images import from_data_url
from geodistil.prompts import CLUES_HEADER

_TOOLS_BLOCK = re.compile(r"<tools>(.*?)</tools>", re.DOTALL)
_HEADER_CHARS = 4096  # base64 characters decoded to find an image's size: JPEG/PNG headers fit


@dataclass(frozen=True)
class Conversation:
    """What the simulated teacher needs from a request, and nothing else."""

    first_user_text: str
    clues: str | None
    assistant_turns: int
    image_urls: tuple[str, ...]  # every image in the conversation, in order (image k = tool output k)
    offered_tools: frozenset[str]
    request_seed: int | None
    prompt_chars: int  # for rough usage accounting

    def key(self, seed: int, *extra: object) -> int:
        """A stable integer for this conversation (and ``extra``), to seed a ``random.Random``."""
        first = self.image_urls[0] if self.image_urls else ""
        # the tail and length of the first image tell samples with equal clue texts apart
        blob = "\x1f".join(map(str, (seed, self.request_seed, self.first_user_text, len(first), first[-256:], *extra)))
        return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big")


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [p for p in content if isinstance(p, dict)]
    return []


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "\n".join(p.get("text") or "" for p in parts if p.get("type") == "text")


@lru_cache(maxsize=4096)
def clues_in(text: str) -> str | None:
    """The paragraph after the last ``Clues:`` header, as ``prompts.user_text`` writes it."""
    at = text.rfind(CLUES_HEADER)
    if at < 0:
        return None
    clues = text[at + len(CLUES_HEADER):].split("\n\n", 1)[0].strip()
    return clues or None


@lru_cache(maxsize=4096)
def tools_named_in(text: str) -> frozenset[str]:
    """Tool names of the Qwen/Hermes ``<tools>`` block (one JSON spec per line)."""
    names: set[str] = set()
    for block in _TOOLS_BLOCK.findall(text):
        for line in block.splitlines():
            try:
                spec = json.loads(line)
            except ValueError:
                continue
            if isinstance(spec, dict):
                fn = spec.get("function") if isinstance(spec.get("function"), dict) else spec
                if isinstance(fn.get("name"), str):
                    names.add(fn["name"])
    return frozenset(names)


def native_tools(tools: Any) -> frozenset[str]:
    names = set()
    for spec in tools if isinstance(tools, list) else []:
        fn = spec.get("function") if isinstance(spec, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.add(fn["name"])
    return frozenset(names)


def read_request(body: Any) -> Conversation:
    """The ``Conversation`` in a chat-completion body; ``ValueError`` if it has no messages."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError("the request needs a non-empty 'messages' list")
    first_user: str | None = None
    images: list[str] = []
    turns = chars = 0
    for message in messages:
        if not isinstance(message, dict):
            raise ValueError("every message must be an object")
        parts = _parts(message.get("content"))
        text = _text_of(parts)
        chars += len(text)
        if message.get("role") == "assistant":
            turns += 1
        elif message.get("role") == "user":
            if first_user is None:
                first_user = text
            images.extend(p["image_url"]["url"] for p in parts if p.get("type") == "image_url"
                          and isinstance(p.get("image_url"), dict) and isinstance(p["image_url"].get("url"), str))
    first_user = first_user or ""
    # a chat template writes the request's tools into the prompt too: the model sees both
    offered = tools_named_in(first_user) | native_tools(body.get("tools"))
    seed = body.get("seed")
    return Conversation(first_user, clues_in(first_user), turns, tuple(images), offered,
                        seed if isinstance(seed, int) else None, chars)


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # JPEG start-of-frame markers


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of a PNG or baseline/progressive JPEG, else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker in _SOF:
            return int.from_bytes(data[at + 7:at + 9], "big"), int.from_bytes(data[at + 5:at + 7], "big")
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return None


def image_size(url: str) -> tuple[int, int] | None:
    """Width and height of a data-URL image from its header; None if it is not a readable data URL.

    A hand-read header costs microseconds where even a lazy ``Image.open`` costs a tenth of a
    millisecond or more; PIL and then a full decode are the fallbacks for unusual files.
    """
    if not url.startswith("data:"):
        return None
    head, _, payload = url.partition(",")
    if ";base64" not in head:
        return None
    try:
        prefix = base64.b64decode(payload[:_HEADER_CHARS - _HEADER_CHARS % 4])
        size = _header_size(prefix)
        if size is not None:
            return size
        with Image.open(io.BytesIO(prefix)) as image:  # reads the header, decodes no pixels
            return image.size
    except (binascii.Error, OSError, ValueError):
        pass
    try:  # an unusual header past the prefix: decode it all, once in a while
        return from_data_url(url).size
    except Exception:  # noqa: BLE001 - any undecodable image just means "no size"
        return None
