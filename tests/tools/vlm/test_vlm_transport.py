"""Images go to a non-loopback VLM server only over https, or with an explicit opt-in."""

from __future__ import annotations

import pytest

from cxr_agent.settings import Settings
from tools.vlm.backends.base import ModelUnavailable
from tools.vlm.backends.openai_backend import OpenAIBackend
from tools.vlm.backends.transport import check_transport, is_loopback


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1",
                                 "http://127.1.2.3/v1", "https://vlm.example.org/v1", "https://10.0.0.5/v1"])
def test_loopback_or_https_is_allowed(url):
    check_transport(url)
    OpenAIBackend(Settings(openai_base_url=url)).close()


@pytest.mark.parametrize("url", ["http://vlm.example.org/v1", "http://10.0.0.5:8000/v1", "http://[2001:db8::1]/v1",
                                 "http://localhost.example.org/v1", "http://127.0.0.1.nip.io/v1"])
def test_plain_http_off_the_machine_is_refused_unless_opted_in(url):
    with pytest.raises(ModelUnavailable, match="CXR_AGENT_VLM_ALLOW_INSECURE_REMOTE"):
        OpenAIBackend(Settings(openai_base_url=url))
    OpenAIBackend(Settings(openai_base_url=url, vlm_allow_insecure_remote=True)).close()


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/v1", "127.0.0.1:8000", "http:///v1"])
def test_malformed_urls_are_refused(url):
    with pytest.raises(ModelUnavailable, match="CXR_AGENT_OPENAI_BASE_URL"):
        check_transport(url)


def test_names_are_not_resolved():
    assert is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("my-laptop") and not is_loopback("10.0.0.1")
