"""Tool-call dialects: everything that differs between the ways teachers call tools.

A dialect owns the tool block it puts in the prompt, what it sends as ``tools`` in the request,
how it reads a reply into calls and problems, the messages that carry tool results (and images)
back, how a call is written as text (training export, the simulated teacher) and where its calls
sit in a reply's text (the viewer marks them). The rollout, check-api, export and viewer ask the
dialect and never branch on the format.

- ``hermes`` (Qwen2.5 / Qwen3 / InternVL): ``<tool_call>{"name": .., "arguments": {..}}</tool_call>``,
  several per message, the last one possibly unterminated, the JSON possibly in a ```json fence,
  also the flat ``{"name": "python_code_tool", "code": ".."}``, and a bare fenced JSON call.
- ``qwen3_xml`` (Qwen3-Coder, newer Qwen3 templates):
  ``<tool_call><function=NAME><parameter=KEY>VALUE</parameter>...</function></tool_call>``,
  read by the rules of vLLM's ``qwen3_coder`` parser (values typed by the tool's JSON schema).
- ``native``: OpenAI ``tools`` / ``tool_calls``; results go back as ``tool`` messages, then a user
  message with the images (a ``tool`` message cannot carry an image).

A reply is read whatever dialect it came in, where that is unambiguous: native ``tool_calls``
are native, a ``<tool_call>`` whose body starts with ``<function=`` is ``qwen3_xml``, any other
one is ``hermes``. Every call records the dialect it was read as, so a filter can drop calls
in a dialect the prompt did not ask for. A malformed call is a ``ToolCallProblem``, which the
rollout sends back to the teacher as a tool error so the teacher can recover.
"""

from __future__ import annotations

import ast
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from geodistil import prompts
from geodistil.trace import ImagePart, Message, TextPart

DialectName = Literal["hermes", "qwen3_xml", "native"]
ALIASES = {"text": "hermes"}  # the setting's name before dialects had names; stored run files say it


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    dialect: str  # the dialect the call was read as
    call_id: str | None = None


@dataclass(frozen=True)
class ToolCallProblem:
    """A call the teacher tried to make but that cannot be run."""

    error: str
    raw: str
    dialect: str
    name: str | None = None
    call_id: str | None = None


ParsedCall = ToolCall | ToolCallProblem


@dataclass(frozen=True)
class ToolResult:
    """What one call gave back: its ``<tool_response>`` text and, if it made one, its image."""

    call_id: str | None
    text: str
    image_ref: int | None = None


@dataclass(frozen=True)
class Reading:
    """A reply's calls, and the dialect whose messages carry their results back."""

    calls: list[ParsedCall]
    dialect: Dialect


@dataclass(frozen=True)
class Span:
    """Where a call sits in a reply's text (``text[start:end]``)."""

    start: int
    end: int
    body: str
    dialect: str


class Dialect(ABC):
    """One way of calling tools; the shared behaviour is the text dialects', ``NativeDialect``
    overrides what differs."""

    name: ClassVar[str]

    @abstractmethod
    def prompt_block(self, tool_specs: list[dict[str, Any]]) -> str | None:
        """The tool block for the first user message, or None when the tools travel in the request."""

    def request_tools(self, tool_specs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """What to send as the request's ``tools``."""
        return None

    def read(self, content: str, tool_calls: list[dict[str, Any]] | None,
             tool_specs: list[dict[str, Any]] | None = None) -> Reading:
        """The calls of a reply (its content after the reasoning, and its native ``tool_calls``)."""
        if tool_calls:  # a server's tool parser answered natively: results must go back as tool messages
            return Reading(NATIVE.parse_tool_calls(tool_calls), NATIVE)
        spans = call_spans(content)
        types = _parameter_types(tool_specs or [])
        calls = [call for span in spans for call in TEXT_DIALECTS[span.dialect].parse_span(span.body, types)]
        return Reading(calls, TEXT_DIALECTS[spans[0].dialect] if spans else self)

    def result_messages(self, results: list[ToolResult]) -> list[Message]:
        """One user message: each result's image (if any), then its ``<tool_response>`` text."""
        parts: list[TextPart | ImagePart] = []
        for result in results:
            if result.image_ref is not None:
                parts.append(ImagePart(ref=result.image_ref))
            parts.append(TextPart(text=result.text))
        return [Message(role="user", content=parts)]

    @abstractmethod
    def call_text(self, name: str, arguments: dict[str, Any] | str) -> str:
        """A call written as this dialect's text (``arguments`` a string: kept as the teacher wrote it)."""

    def native_call_text(self, call: dict[str, Any]) -> str:
        """An OpenAI ``tool_calls`` entry as text, for a training row (which holds text only)."""
        function = call.get("function") or {}
        arguments: Any = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass  # kept as the teacher wrote it: the tool log shows it failed
        return self.call_text(function.get("name") or "", arguments)


class TextDialect(Dialect):
    """A dialect whose calls are text in the reply's content."""

    @abstractmethod
    def claims(self, body: str) -> bool:
        """Whether the body of a ``<tool_call>`` block is written in this dialect."""

    @abstractmethod
    def untagged_spans(self, text: str) -> list[Span]:
        """Calls this dialect writes without ``<tool_call>`` tags (read only when a reply has no tags)."""

    @abstractmethod
    def parse_span(self, body: str, types: dict[str, dict[str, str]]) -> list[ParsedCall]:
        """The calls in the body of one call span of this dialect (``types``: the tools' parameter types)."""


# -- hermes ---------------------------------------------------------------------------------

def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = re.sub(r"^```[a-zA-Z]*\n?", "", text)
        text = re.sub(r"\n?```$", "", text)
    return text.strip()


def _from_payload(payload: Any, raw: str, dialect: str, call_id: str | None = None) -> ParsedCall:
    if not isinstance(payload, dict):
        return ToolCallProblem(f"a tool call must be a JSON object, got {type(payload).__name__}", raw, dialect,
                               call_id=call_id)
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return ToolCallProblem('a tool call needs a "name"', raw, dialect, call_id=call_id)
    if "arguments" in payload:
        arguments = payload["arguments"]
        if isinstance(arguments, str):  # some models double-encode
            try:
                arguments = json.loads(arguments)
            except ValueError as exc:
                return ToolCallProblem(f"arguments of {name} are not valid JSON: {exc}", raw, dialect, name, call_id)
    else:  # flat form: {"name": "python_code_tool", "code": "..."}
        arguments = {k: v for k, v in payload.items() if k != "name"}
    if not isinstance(arguments, dict):
        return ToolCallProblem(f"arguments of {name} must be a JSON object", raw, dialect, name, call_id)
    return ToolCall(name=name, arguments=arguments, dialect=dialect, call_id=call_id)


_FENCED = re.compile(r"```(?:json)?[ \t]*\n(.*?)\n?```", re.DOTALL)


def _is_fenced_call(body: str) -> bool:
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and isinstance(payload.get("name"), str) and "arguments" in payload


class HermesDialect(TextDialect):
    name = "hermes"

    def prompt_block(self, tool_specs: list[dict[str, Any]]) -> str | None:
        return prompts.hermes_tools_block(tool_specs) if tool_specs else None

    def claims(self, body: str) -> bool:
        return True  # asked last: any <tool_call> body the others do not claim is JSON, or a problem

    def untagged_spans(self, text: str) -> list[Span]:
        """Fenced JSON blocks that are calls (``name`` and ``arguments``), not JSON the teacher quotes."""
        return [Span(m.start(), m.end(), m.group(1), self.name) for m in _FENCED.finditer(text)
                if _is_fenced_call(m.group(1))]

    def parse_span(self, body: str, types: dict[str, dict[str, str]]) -> list[ParsedCall]:
        try:
            payload = json.loads(_strip_fences(body))
        except ValueError as exc:
            return [ToolCallProblem(f"tool call is not valid JSON ({exc})", body, self.name)]
        return [_from_payload(payload, body, self.name)]

    def call_text(self, name: str, arguments: dict[str, Any] | str) -> str:
        return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) \
            + "\n</tool_call>"


# -- qwen3_xml ------------------------------------------------------------------------------

_FUNCTION = re.compile(r"<function=(.*?)(?:</function>|$)", re.DOTALL)
_BARE_FUNCTION = re.compile(r"<function=.*?(?:</function>|$)", re.DOTALL)
# a value runs to its closing tag, or else to the next parameter, the end of the function, the end
_PARAMETER = re.compile(r"<parameter=(.*?)(?=</parameter>|<parameter=|</function>|$)(?:</parameter>)?", re.DOTALL)
_STRING_TYPES = ("string", "str", "text", "varchar", "char", "enum")
_INT_PREFIXES = ("int", "uint", "long", "short", "unsigned")


def _parameter_types(tool_specs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """``{tool: {parameter: JSON-schema type}}`` from OpenAI tool specs."""
    types: dict[str, dict[str, str]] = {}
    for spec in tool_specs:
        function = spec.get("function") or {}
        properties = (function.get("parameters") or {}).get("properties") or {}
        types[function.get("name", "")] = {key: str(schema.get("type", "string")).strip().lower()
                                           for key, schema in properties.items() if isinstance(schema, dict)}
    return types


def _json_or_literal(value: str) -> Any:
    """A JSON value, else a Python literal (single-quoted lists), else the string itself."""
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)  # literals only: nothing in the value is executed
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def _typed(value: str, kind: str | None) -> Any:
    """A parameter's value by its schema type, as vLLM's qwen3_coder parser converts it.

    ``null`` is None whatever the type; strings stay as written; integers and numbers that do
    not parse, stay strings (the tool then says what is wrong). A parameter the schema does not
    know is decoded as JSON where it parses: the tool rejects what it does not take.
    """
    if value.lower() == "null":
        return None
    if kind is None:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if kind in _STRING_TYPES:
        return value
    if kind.startswith(_INT_PREFIXES):
        try:
            return int(value)
        except ValueError:
            return value
    if kind.startswith(("num", "float")):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    if kind in ("boolean", "bool", "binary"):
        return value.lower() == "true"
    return _json_or_literal(value)


class Qwen3XmlDialect(TextDialect):
    name = "qwen3_xml"

    def prompt_block(self, tool_specs: list[dict[str, Any]]) -> str | None:
        return prompts.qwen3_xml_tools_block(tool_specs) if tool_specs else None

    def claims(self, body: str) -> bool:
        return body.lstrip().startswith("<function=")

    def untagged_spans(self, text: str) -> list[Span]:
        """Bare ``<function=...>`` blocks, which vLLM's parser also reads."""
        return [Span(m.start(), m.end(), m.group(0), self.name) for m in _BARE_FUNCTION.finditer(text)]

    def parse_span(self, body: str, types: dict[str, dict[str, str]]) -> list[ParsedCall]:
        calls: list[ParsedCall] = []
        for match in _FUNCTION.finditer(body):
            calls.append(self._function(match.group(1), match.group(0), types))
        return calls or [ToolCallProblem("a <tool_call> needs a <function=NAME> block", body, self.name)]

    def _function(self, text: str, raw: str, types: dict[str, dict[str, str]]) -> ParsedCall:
        name, closed, rest = text.partition(">")
        name = name.strip()
        if not closed or not name:
            return ToolCallProblem("a <function=NAME> tag needs a name and a closing '>'", raw, self.name)
        known = types.get(name, {})
        arguments: dict[str, Any] = {}
        for match in _PARAMETER.finditer(rest):
            key, closed, value = match.group(1).partition(">")
            key = key.strip()
            if not closed or not key:
                return ToolCallProblem(f"a <parameter=KEY> tag of {name} needs a key and a closing '>'", raw,
                                       self.name, name)
            value = value.removeprefix("\n").removesuffix("\n")  # the template puts values on their own lines
            arguments[key] = _typed(value, known.get(key))
        return ToolCall(name=name, arguments=arguments, dialect=self.name)

    def call_text(self, name: str, arguments: dict[str, Any] | str) -> str:
        if isinstance(arguments, str):  # not an object: there are no parameters to write
            return f"<tool_call>\n<function={name}>\n{arguments}\n</function>\n</tool_call>"
        parameters = "".join(
            f"<parameter={key}>\n{value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}\n"
            "</parameter>\n" for key, value in arguments.items())
        return f"<tool_call>\n<function={name}>\n{parameters}</function>\n</tool_call>"


# -- native ---------------------------------------------------------------------------------

class NativeDialect(Dialect):
    name = "native"

    def prompt_block(self, tool_specs: list[dict[str, Any]]) -> str | None:
        return None

    def request_tools(self, tool_specs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        return tool_specs or None

    def parse_tool_calls(self, tool_calls: list[dict[str, Any]]) -> list[ParsedCall]:
        """OpenAI ``message.tool_calls`` (as dicts) to calls."""
        calls: list[ParsedCall] = []
        for tc in tool_calls:
            fn = tc.get("function") or {}
            call_id = tc.get("id")
            name = fn.get("name")
            raw = fn.get("arguments") or "{}"
            try:
                arguments = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError as exc:
                calls.append(ToolCallProblem(f"arguments of {name} are not valid JSON: {exc}", str(raw), self.name,
                                             name, call_id))
                continue
            calls.append(_from_payload({"name": name, "arguments": arguments}, str(raw), self.name, call_id))
        return calls

    def result_messages(self, results: list[ToolResult]) -> list[Message]:
        """A ``tool`` message per call with an id, then one user message with the images (and the
        texts of calls without an id, which no ``tool`` message can answer)."""
        messages: list[Message] = []
        parts: list[TextPart | ImagePart] = []
        for result in results:
            if result.call_id:
                messages.append(Message(role="tool", tool_call_id=result.call_id, content=result.text))
            if result.image_ref is not None:
                parts.append(ImagePart(ref=result.image_ref))
            if not result.call_id:
                parts.append(TextPart(text=result.text))
        if not parts:  # calls that all failed: the tool messages said it all
            parts.append(TextPart(text="See the tool results above."))
        elif all(isinstance(p, ImagePart) for p in parts):
            parts.append(TextPart(text="The images above are the tool outputs, in order."))
        return [*messages, Message(role="user", content=parts)]

    def call_text(self, name: str, arguments: dict[str, Any] | str) -> str:
        # a training row is text: native calls take the Qwen/Hermes form that chat templates render
        return HERMES.call_text(name, arguments)


HERMES, QWEN3_XML, NATIVE = HermesDialect(), Qwen3XmlDialect(), NativeDialect()
TEXT_DIALECTS: dict[str, TextDialect] = {d.name: d for d in (HERMES, QWEN3_XML)}
DIALECTS: dict[str, Dialect] = {**TEXT_DIALECTS, NATIVE.name: NATIVE}


def dialect_named(name: str) -> Dialect:
    """The dialect registered as ``name`` (or an alias of it)."""
    try:
        return DIALECTS[ALIASES.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown tool-call dialect {name!r}; known: {', '.join([*DIALECTS, *ALIASES])}") from None


# -- where the calls are in a reply's text --------------------------------------------------

_TAGGED = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_RECOGNITION = (QWEN3_XML, HERMES)  # the most specific first: hermes takes any body left


def call_spans(text: str | None) -> list[Span]:
    """Every tool call in a reply's text, in order, each with the dialect it is written in.

    ``<tool_call>`` blocks, each claimed by the first dialect that recognises its body; without
    any, the calls a dialect writes untagged (bare ``<function=``, then fenced JSON calls).
    """
    if not text:
        return []
    tagged = [Span(m.start(), m.end(), m.group(1), next(d for d in _RECOGNITION if d.claims(m.group(1))).name)
              for m in _TAGGED.finditer(text)]
    if tagged:
        return tagged
    for dialect in _RECOGNITION:
        if spans := dialect.untagged_spans(text):
            return spans
    return []
