"""The remote UI's transport: no plain http:// to a graph server on another machine unless allowed, and
no file name in an upload's URL (access logs record URLs; a file name may carry a patient's name)."""

from __future__ import annotations

import httpx
import pytest

from cxr_agent.settings import Settings
from ui.remote import InsecureGraphURL, RemoteAgent


@pytest.mark.parametrize("url", ["http://graph.internal:2024", "http://10.0.0.5:2024", "ftp://graph:21", "http://"])
def test_an_insecure_or_malformed_graph_url_is_refused(url):
    with pytest.raises(InsecureGraphURL, match="CXR_AGENT_GRAPH_URL"):
        RemoteAgent(Settings(graph_url=url))


@pytest.mark.parametrize("url", ["https://graph.internal", "http://127.0.0.1:2024", "http://localhost:2024",
                                 "http://[::1]:2024"])
def test_https_or_loopback_is_accepted(url):
    assert RemoteAgent(Settings(graph_url=url)).url == url.rstrip("/")


def test_plain_http_off_loopback_only_when_allowed():
    agent = RemoteAgent(Settings(graph_url="http://graph.internal:2024", graph_allow_insecure_remote=True))
    assert agent.url == "http://graph.internal:2024"


def test_the_upload_sends_the_type_not_the_name():
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"study_id": "a" * 64, "width": 1, "height": 1})

    url = "https://graph.internal"
    agent = RemoteAgent(Settings(graph_url=url), http=httpx.Client(base_url=url, transport=httpx.MockTransport(server)))
    agent.upload(b"bytes", "Doe^Jane 1970-01-01.DCM")
    assert seen[0].url.query == b"" and "Doe" not in str(seen[0].url)
    assert seen[0].headers["x-cxr-file-type"] == "dcm"
    assert all("Doe" not in v for v in seen[0].headers.values())
    agent.upload(b"bytes", "no extension")
    assert "x-cxr-file-type" not in seen[1].headers
