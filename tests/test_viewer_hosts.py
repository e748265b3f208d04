"""The viewer answers only the Host names it was started for: a DNS-rebinding page gets a 400."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from geodistil.cli import app as cli
from geodistil.store import TraceStore
from geodistil.viewer import create_app, host_names
from geodistil.viewer.hosts import host_name
from tests.viewer_support import running_viewer, synthetic_trace, write_synthetic


@pytest.fixture()
def store(tmp_path) -> TraceStore:
    store = TraceStore(str(tmp_path / "traces"))
    write_synthetic(store, [synthetic_trace(0, 0.5)])
    return store


def status(store: TraceStore, host: str, allowed: list[str] | None = None) -> int:
    app = create_app(store) if allowed is None else create_app(store, allowed_hosts=allowed)
    return TestClient(app, base_url=f"http://{host}").get("/api/traces").status_code


def test_an_unknown_host_gets_a_400_with_a_one_line_body(store):
    response = TestClient(create_app(store), base_url="http://rebound.example:8765").get("/api/traces")
    assert response.status_code == 400 and response.text.strip() and "\n" not in response.text.strip()
    assert '"traces"' not in response.text


@pytest.mark.parametrize("host", ["localhost:8765", "127.0.0.1:8765", "[::1]:8765", "localhost:9000", "LOCALHOST"])
def test_loopback_names_are_answered_on_any_port(store, host):
    assert status(store, host) == 200


def test_the_address_it_listens_on_is_answered_and_no_other(store):
    allowed = host_names("192.168.1.7")
    assert status(store, "192.168.1.7:8765", allowed) == 200
    assert status(store, "192.168.1.8:8765", allowed) == 400


def test_listening_on_every_interface_answers_the_names_the_user_lists(store):
    allowed = host_names("0.0.0.0", ["MyBox.lan", "10.0.0.5"])
    assert [status(store, h, allowed) for h in ("mybox.lan:8765", "10.0.0.5:8765", "localhost:8765")] == [200] * 3
    assert [status(store, h, allowed) for h in ("0.0.0.0:8765", "other.lan:8765")] == [400, 400]


def test_host_names_are_spelled_as_a_host_header_spells_them():
    assert host_names("::1", ["Box.Example", "[FE80::0001]"]) == ["[::1]", "localhost", "127.0.0.1", "box.example",
                                                                 "[fe80::1]"]


@pytest.mark.parametrize("bad", ["http://box", "box:8765", "*.example.com", "box/path", "two words", ""])
def test_a_host_name_with_a_scheme_port_path_or_wildcard_is_refused(bad):
    with pytest.raises(ValueError, match="not a host name or IP address"):
        host_name(bad)


def test_view_refuses_a_bad_allowed_host_in_one_message(tmp_path):
    result = CliRunner().invoke(cli, ["view", str(tmp_path), "--allowed-host", "http://box:8765/"])
    words = " ".join(result.output.replace("│", " ").split())  # rich wraps the message inside a box
    assert result.exit_code == 2 and "'http://box:8765/' is not a host name or IP address" in words
    assert "Traceback" not in result.output


def test_a_running_viewer_refuses_a_rebound_name_and_answers_its_own(store):
    """Raw requests over a socket, as a browser sends them after a DNS rebinding."""
    with running_viewer(store) as base:
        address = urlsplit(base)
        answers = {}
        for host in (f"rebound.example:{address.port}", address.netloc):
            conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
            conn.request("GET", "/api/traces", headers={"Host": host})
            response = conn.getresponse()
            answers[host] = (response.status, response.read())
            conn.close()
    refused, answered = answers[f"rebound.example:{address.port}"], answers[address.netloc]
    assert refused[0] == 400 and b"traces" not in refused[1]
    assert answered[0] == 200 and b"traces" in answered[1]
