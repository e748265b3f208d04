"""What a list request asks for: sort, filters and page, parsed from the URL's query string.

The same parameters drive the JSON API (``/api/traces``), the list page (``/``) and the
trace page's prev/next, so a filtered list can be walked trace by trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geodistil.errors import QueryError

# sort name in the URL -> index column
SORT_KEYS = {"sample": "sample", "reward": "reward", "distance": "distance", "turns": "turns",
             "tools": "tool_calls", "tool_errors": "tool_errors"}
MAX_PER_PAGE = 500


class TraceQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sort: Literal["sample", "reward", "distance", "turns", "tools", "tool_errors"] = "sample"
    order: Literal["asc", "desc"] = "asc"
    min_reward: float | None = Field(None, ge=0, le=1)
    max_reward: float | None = Field(None, ge=0, le=1)
    min_distance: float | None = Field(None, ge=0)
    max_distance: float | None = Field(None, ge=0)
    min_turns: int | None = Field(None, ge=0)
    tool: str | None = Field(None, max_length=100, description="traces that called this tool")
    tool_errors: bool | None = Field(None, description="traces with (1) or without (0) a failed tool call")
    failed: bool | None = Field(None, description="traces with (1) or without (0) an error")
    stop: str | None = Field(None, max_length=40, description="stop reason")
    q: str | None = Field(None, max_length=200, description="text in the name or the error")
    page: int = Field(1, ge=1)
    per_page: int = Field(50, ge=1, le=MAX_PER_PAGE)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> "TraceQuery":
        """Parse a query string's parameters; an empty value (an HTML form's unset field) means unset."""
        data = {k: v for k, v in params.items() if v != ""}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'query'}: {e['msg']}" for e in exc.errors())
            raise QueryError(problems) from exc

    def params(self, **changes: object) -> dict[str, str]:
        """The non-default parameters (with changes), for links that keep the current view."""
        merged = self.model_copy(update=changes)
        out: dict[str, str] = {}
        defaults = TraceQuery()
        for name in type(self).model_fields:
            value = getattr(merged, name)
            if value is None or value == getattr(defaults, name):
                continue
            out[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out

    def url_query(self, **changes: object) -> str:
        params = self.params(**changes)
        return f"?{urlencode(params)}" if params else ""

    def view_query(self) -> str:
        """The query without the page: what prev/next on a trace page keep."""
        params = self.params()
        params.pop("page", None)
        return f"?{urlencode(params)}" if params else ""
