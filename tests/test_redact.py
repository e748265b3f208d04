"""URLs as recorded and logged: without the credentials they may carry."""

import pytest

from geodistil.redact import redact_url, url_has_credentials


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
