"""Answer parsing, great-circle distance and reward.

Conventions (``shared/DESIGN.md``): decimal degrees, a sphere of radius 6371.0088 km,
reward ``exp(-d / 1492.7)``, an unparseable answer counts as 20000 km and reward 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

EARTH_RADIUS_KM = 6371.0088
REWARD_SCALE_KM = 1492.7
NO_PARSE_DISTANCE_KM = 20000.0
THRESHOLDS_KM: tuple[float, ...] = (1, 25, 200, 750, 2500)
THRESHOLD_NAMES = {1: "street", 25: "city", 200: "region", 750: "country", 2500: "continent"}

AnswerFormat = Literal["boxed", "glm_box", "plain_last_line"]

_BOXED = re.compile(r"\\boxed\s*\{")
# GLM-4.5V boxes its answer in special tokens (and, asked for \boxed{}, sometimes around it)
_GLM_BOX = re.compile(r"<\|begin_of_box\|>(.*?)<\|end_of_box\|>", re.DOTALL)
_NUMBER = r"[+-]?\s*\d+(?:\.\d+)?"
# one coordinate: optional label, optional sign, number, optional degree sign, optional hemisphere
_COORD = re.compile(
    rf"(?:(?P<label>lat(?:itude)?|lon(?:gitude)?|lng)\s*[:=]?\s*)?"
    rf"(?P<num>{_NUMBER})\s*(?:°|º|deg(?:rees)?)?\s*(?P<hemi>[NSEWnsew](?![a-z]))?",
    re.IGNORECASE,
)


def _boxed_contents(text: str) -> list[tuple[int, int]]:
    """The (start, end) of every ``\\boxed{...}`` body in order, with nested braces balanced."""
    bodies = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    bodies.append((start, i))
                    break
    return bodies


def _parse_pair(body: str) -> tuple[float, float] | None:
    body = body.replace("\\circ", "°").replace("^", "").replace("{", "").replace("}", "")
    body = body.replace("$", "").strip().strip("()[]").strip()
    # "48,85, 2,35": a decimal comma is ambiguous, and a guess would be scored as if meant
    if re.search(r"\d,\d", body) and len(re.findall(r"\d,\d", body)) >= 1 and body.count(",") != 1:
        return None
    coords = [m for m in _COORD.finditer(body) if m.group("num")]
    if len(coords) != 2:
        return None
    values: list[float] = []
    kinds: list[str | None] = []
    for m in coords:
        value = float(m.group("num").replace(" ", ""))
        hemi = (m.group("hemi") or "").upper()
        label = (m.group("label") or "").lower()
        if hemi in ("S", "W"):
            if value < 0:
                return None
            value = -value
        kind = None
        if hemi in ("N", "S") or label.startswith("lat"):
            kind = "lat"
        elif hemi in ("E", "W") or label.startswith(("lon", "lng")):
            kind = "lon"
        values.append(value)
        kinds.append(kind)
    if kinds == ["lon", "lat"]:
        values.reverse()
    elif kinds[0] == kinds[1] and kinds[0] is not None:
        return None
    lat, lon = values
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return lat, lon


_PLAIN_NUMBER = r"[+-]?\d+\.\d+|\d+(?:\.\d+)?\s*(?:°|º)\s*[NSEWnsew]?|\d+(?:\.\d+)?\s+[NSEWnsew]"
_PLAIN_COORD = rf"(?:(?:lat(?:itude)?|lon(?:gitude)?|lng)\s*[:=]?\s*)?(?:{_PLAIN_NUMBER})\s*(?:°|º)?\s*[NSEWnsew]?"
# a last line that is a coordinate pair and nothing else (perhaps labelled, bold or in parentheses)
_PLAIN_LINE = re.compile(
    rf"(?:(?:final\s+)?(?:answer|coordinates|location|prediction)\s*[:=\-]\s*)?"
    rf"\(?\s*{_PLAIN_COORD}\s*[,;]\s*{_PLAIN_COORD}\s*\)?\.?", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    lat: float
    lon: float
    format: AnswerFormat  # how the teacher wrote it: a filter may drop answers that ignored the prompt
    span: tuple[int, int]  # where the answer, box included, is in the reply (the viewer marks it)


def _last_plain_line(text: str) -> tuple[str, tuple[int, int]] | None:
    end = len(text.rstrip())
    start = text.rfind("\n", 0, end) + 1
    line = text[start:end].strip().strip("*_`").strip()
    return (line, (start, end)) if _PLAIN_LINE.fullmatch(line) else None


def read_answer(text: str | None) -> Answer | None:
    """The teacher's answer and how it was written, or None.

    ``boxed``: the last ``\\boxed{...}``, as the prompt asks; ``glm_box``: else the last
    ``<|begin_of_box|>...<|end_of_box|>``; ``plain_last_line``: else a last line that is only a
    coordinate pair (``48.85, 2.35``, ``48.8566° N, 2.3522° E``), the prompt's format ignored.
    A box that does not parse is no answer: the teacher did box something, and a guess at
    another number in the reply would be scored as if meant.
    """
    if not text:
        return None
    boxed = _boxed_contents(text)
    if boxed:
        start, end = boxed[-1]
        return _answer(_GLM_BOX.sub(r"\1", text[start:end]), "boxed", (text.rfind("\\boxed", 0, start), end + 1))
    glm = list(_GLM_BOX.finditer(text))
    if glm:
        return _answer(glm[-1].group(1), "glm_box", glm[-1].span())
    plain = _last_plain_line(text)
    return _answer(plain[0], "plain_last_line", plain[1]) if plain else None


def _answer(body: str, fmt: AnswerFormat, span: tuple[int, int]) -> Answer | None:
    pair = _parse_pair(body)
    return Answer(pair[0], pair[1], fmt, span) if pair else None


def parse_answer(text: str | None) -> tuple[float, float] | None:
    """The (lat, lon) of ``read_answer``, or None.

    Understands signed decimals, degree signs, N/S/E/W hemispheres, ``lat: .., lon: ..``
    labels (in either order), parentheses and surrounding words. A decimal comma inside a
    boxed pair (``48,85, 2,35``) is rejected rather than guessed; so are out-of-range values.
    """
    answer = read_answer(text)
    return (answer.lat, answer.lon) if answer else None


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km on a sphere of radius 6371.0088 km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def reward(distance_km: float) -> float:
    """``exp(-d / 1492.7)``: the GeoGuessr score curve divided by 5000."""
    return math.exp(-distance_km / REWARD_SCALE_KM)


def score(
    prediction: tuple[float, float] | None, truth: tuple[float, float]
) -> tuple[float, float]:
    """(distance_km, reward) of a prediction; no prediction is 20000 km and reward 0."""
    if prediction is None:
        return NO_PARSE_DISTANCE_KM, 0.0
    d = haversine_km(prediction[0], prediction[1], truth[0], truth[1])
    return d, reward(d)


def threshold_accuracies(
    distances_km: Iterable[float], thresholds: Iterable[float] = THRESHOLDS_KM
) -> dict[str, float]:
    """Share of distances at or under each threshold, keyed like ``"acc@25km"``."""
    ds = list(distances_km)
    return {
        f"acc@{t:g}km": (sum(d <= t for d in ds) / len(ds) if ds else 0.0) for t in thresholds
    }
