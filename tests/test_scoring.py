import math

import pytest

from geodistil.scoring import (
    NO_PARSE_DISTANCE_KM, haversine_km, parse_answer, read_answer, reward, score, threshold_accuracies,
)


@pytest.mark.parametrize("text, expected", [
    (r"So the answer is \boxed{48.8566, 2.3522}", (48.8566, 2.3522)),
    (r"\boxed{-33.8688,151.2093}", (-33.8688, 151.2093)),
    (r"\boxed{ -33.8688 ,  151.2093 }", (-33.8688, 151.2093)),
    (r"\boxed{(40.4168, -3.7038)}", (40.4168, -3.7038)),
    (r"\boxed{48.8566° N, 2.3522° E}", (48.8566, 2.3522)),
    (r"\boxed{33.87°S, 151.21°E}", (-33.87, 151.21)),
    (r"\boxed{22.9 S, 43.2 W}", (-22.9, -43.2)),
    (r"\boxed{lat: 35.68, lon: 139.69}", (35.68, 139.69)),
    (r"\boxed{longitude: 139.69, latitude: 35.68}", (35.68, 139.69)),
    (r"\boxed{2.35 E, 48.85 N}", (48.85, 2.35)),
    (r"\boxed{Latitude 51.5, Longitude -0.12}", (51.5, -0.12)),
    (r"\boxed{$40.7^\circ, -74.0^\circ$}", (40.7, -74.0)),
])
def test_parse_answer_understands_common_forms(text, expected):
    assert parse_answer(text) == pytest.approx(expected)


def test_parse_answer_takes_the_last_box():
    assert parse_answer(r"maybe \boxed{1, 2} but finally \boxed{10, 20}") == (10, 20)


@pytest.mark.parametrize("text", [
    None, "", "no box here 48.8, 2.3", r"\boxed{Paris}", r"\boxed{48.8566}",
    r"\boxed{91.0, 2.0}", r"\boxed{45.0, 181.0}", r"\boxed{48,8566, 2,3522}",
    r"\boxed{48.85 N, 2.35 N}", r"\boxed{1, 2, 3}",
])
def test_parse_answer_rejects_what_it_cannot_read_safely(text):
    assert parse_answer(text) is None


def test_haversine_known_distance_paris_london():
    assert haversine_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343.9, abs=1.0)


def test_haversine_is_zero_for_same_point_and_half_circumference_for_antipodes():
    assert haversine_km(10, 20, 10, 20) == 0
    assert haversine_km(0, 0, 0, 180) == pytest.approx(math.pi * 6371.0088)


def test_reward_curve():
    assert reward(0) == 1.0
    assert reward(1492.7) == pytest.approx(math.exp(-1))


def test_no_prediction_scores_20000_km_and_zero():
    assert score(None, (1, 2)) == (NO_PARSE_DISTANCE_KM, 0.0)


def test_threshold_accuracies():
    acc = threshold_accuracies([0.5, 20, 300, 5000])
    assert acc == {"acc@1km": 0.25, "acc@25km": 0.5, "acc@200km": 0.5, "acc@750km": 0.75, "acc@2500km": 0.75}


@pytest.mark.parametrize("text, fmt, expected", [
    (r"So it is Paris. \boxed{48.8566, 2.3522}", "boxed", (48.8566, 2.3522)),
    ("It is Lyon. <|begin_of_box|>45.764, 4.836<|end_of_box|>", "glm_box", (45.764, 4.836)),
    ("<|begin_of_box|>33.87°S, 151.21°E<|end_of_box|>", "glm_box", (-33.87, 151.21)),
    ("<|begin_of_box|>\\boxed{45.764, 4.836}<|end_of_box|>", "boxed", (45.764, 4.836)),
    ("\\boxed{<|begin_of_box|>45.764, 4.836<|end_of_box|>}", "boxed", (45.764, 4.836)),
    ("The sign says Paris.\n48.85, 2.35", "plain_last_line", (48.85, 2.35)),
    ("The sign says Paris.\n\n**48.8566° N, 2.3522° E**\n", "plain_last_line", (48.8566, 2.3522)),
    ("Sydney, from the bridge.\nFinal answer: (-33.87, 151.21).", "plain_last_line", (-33.87, 151.21)),
])
def test_read_answer_records_how_the_answer_was_written(text, fmt, expected):
    answer = read_answer(text)
    assert answer is not None and answer.format == fmt and (answer.lat, answer.lon) == pytest.approx(expected)


@pytest.mark.parametrize("text", [
    "roughly at latitude 48.85 and longitude 2.35.",  # the simulated teacher's no-box reply
    "48.85, 2.35\nbut I am not sure",  # coordinates, but not in the last line
    "Step 1, 2",  # two small integers are a list, not a place
    "\\boxed{Paris}\n48.85, 2.35",  # a box that does not parse is no answer: no guess at other numbers
    "<|begin_of_box|>Paris<|end_of_box|>",
])
def test_read_answer_finds_no_answer_where_none_was_given_plainly(text):
    assert read_answer(text) is None
