"""URLs as recorded and logged: without the credentials they may carry."""

import asyncio
import base64

import pytest

from geodistil.config import GenerationConfig, TeacherConfig
from geodistil.redact import redact_url, split_credentials, url_has_credentials
from geodistil.sim.server import SimConfig, SimServer
from geodistil.teacher import TeacherClient


@pytest.mark.parametrize("url, recorded", [
    ("https://user:s3cret@host.example/v1", "https://host.example/v1"),
    ("https://s3cret@host.example:8443/v1", "https://host.example:8443/v1"),
    ("https://host.example/v1?key=s3cret", "https://host.example/v1"),
    ("https://host.example/v1?api_key=s3cret&region=eu", "https://host.example/v1?region=eu"),
    ("https://host.example/v1?Api-Key=s3cret", "https://host.example/v1"),
])
def test_credentials_are_stripped_from_a_url(url, recorded):
    assert redact_url(url) == recorded
    assert url_has_credentials(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "https://host.example/v1?region=eu", "out/traces"])
def test_a_url_without_credentials_is_recorded_as_it_is(url):
    assert redact_url(url) == url
    assert not url_has_credentials(url)


def test_a_url_splits_into_the_clean_url_its_secret_query_and_basic_auth():
    url, query, headers = split_credentials("https://ann:p%40ss@host.example/v1?key=s3cret&region=eu")
    assert url == "https://host.example/v1?region=eu" and query == {"key": "s3cret"}
    assert headers == {"Authorization": "Basic " + base64.b64encode(b"ann:p@ss").decode()}


@pytest.mark.parametrize("credentials", ["ann:pw@", ""])
def test_a_teacher_url_with_credentials_still_reaches_the_teacher(credentials):
    with SimServer(SimConfig(port=0)) as sim:
        url = sim.base_url.replace("://", f"://{credentials}", 1) + "?key=s3cret"

        async def ask():
            async with TeacherClient(TeacherConfig(base_url=url, model="m", max_retries=0)) as client:
                return await client.complete([{"role": "user", "content": "Where is this? A sign reads Paris."}],
                                             GenerationConfig(max_tokens=64))

        reply = asyncio.run(ask())
        assert sim.stats()["ok"] == 1
    assert reply.content
