"""What a teacher's tokens cost: dollars per million input, cached input and output tokens.

``PRICES`` holds the common OpenAI, Gemini and Anthropic models at their standard (not
batch) rates for prompts under any long-context surcharge, as read on ``PRICES_READ`` from
copies of the providers' pricing pages (this code cannot browse; check them before trusting
a budget). A model name matches its entry or the longest entry it starts with
(``gpt-4o-2024-08-06`` is ``gpt-4o``); Gemini's ``models/`` prefix is ignored. A model
without a price (a self-hosted one) gets token counts and no cost, unless the run gives
``price_input`` / ``price_output`` (``TeacherConfig``), which win over the table.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from geodistil.trace import Usage

PRICES_READ = "2026-03-21 (OpenAI, Anthropic) and 2026-03 (Gemini)"


class Price(BaseModel):
    """Dollars per million tokens; cached input defaults to the input price where unknown."""

    model_config = ConfigDict(frozen=True)

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return ((usage.prompt_tokens - cached) * self.input + cached * cached_rate
                + usage.completion_tokens * self.output) / 1e6


def _p(input: float, cached_input: float, output: float) -> Price:
    return Price(input=input, cached_input=cached_input, output=output)


PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-5": _p(1.25, 0.125, 10.0),
    "gpt-5-mini": _p(0.25, 0.025, 2.0),
    "gpt-5-nano": _p(0.05, 0.005, 0.40),
    "gpt-4.1": _p(2.0, 0.50, 8.0),
    "gpt-4.1-mini": _p(0.40, 0.10, 1.60),
    "gpt-4.1-nano": _p(0.10, 0.025, 0.40),
    "gpt-4o": _p(2.50, 1.25, 10.0),
    "gpt-4o-mini": _p(0.15, 0.075, 0.60),
    "o3": _p(2.0, 0.50, 8.0),
    "o4-mini": _p(1.10, 0.275, 4.40),
    # Gemini (prompts up to 200k tokens)
    "gemini-2.5-pro": _p(1.25, 0.31, 10.0),
    "gemini-2.5-flash": _p(0.30, 0.075, 2.50),
    "gemini-2.5-flash-lite": _p(0.10, 0.025, 0.40),
    # Anthropic (cache reads; cache writes are not reported through the OpenAI-compatible usage)
    "claude-opus-4-5": _p(5.0, 0.50, 25.0),
    "claude-opus-4-1": _p(15.0, 1.50, 75.0),
    "claude-sonnet-4-5": _p(3.0, 0.30, 15.0),
    "claude-sonnet-4": _p(3.0, 0.30, 15.0),
    "claude-haiku-4-5": _p(1.0, 0.10, 5.0),
}


def price_of(model: str, table: dict[str, Price] = PRICES) -> Price | None:
    """The table's price for ``model``: its entry, else the longest entry it starts with."""
    name = model.removeprefix("models/")
    matches = [key for key in table if name == key or name.startswith(key + "-")]
    return table[max(matches, key=len)] if matches else None


def read_price_file(text: str) -> dict[str, Price]:
    """A price table of one's own (YAML or JSON): ``{model: {input: .., output: .., cached_input: ..}}``,
    dollars per million tokens, matched to a model as the built-in table is."""
    import yaml
    from pydantic import TypeAdapter, ValidationError

    from geodistil.errors import ConfigError

    try:
        return TypeAdapter(dict[str, Price]).validate_python(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"price file: {first[0] if first else exc}") from None
