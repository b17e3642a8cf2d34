"""Where images may be sent: a remote VLM server only over https (or by explicit opt-in).

Why: the OpenAI-compatible backend posts the whole radiograph (a patient's image) to
``Settings.openai_base_url``. Over plain http:// to another machine it crosses the network in
clear text. Loopback (127.0.0.0/8, ::1, localhost) never leaves the machine, so http is fine
there; anything else needs https, or ``CXR_AGENT_VLM_ALLOW_INSECURE_REMOTE=true`` (e.g. a
private, already-encrypted network). Host names are not resolved: only "localhost" counts as
loopback by name, so a DNS answer cannot quietly turn a remote server into a "local" one.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from tools.vlm.backends.base import ModelUnavailable


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (literal addresses and the name "localhost" only)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(base_url: str, allow_insecure_remote: bool = False) -> None:
    """Refuse (ModelUnavailable) a VLM server URL that would send images unencrypted off this machine."""
    try:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
    except ValueError:
        raise ModelUnavailable("CXR_AGENT_OPENAI_BASE_URL is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ModelUnavailable("CXR_AGENT_OPENAI_BASE_URL must be an http:// or https:// URL with a host.")
    if parts.scheme == "http" and not is_loopback(host) and not allow_insecure_remote:
        raise ModelUnavailable(
            "The VLM server is on another machine but its URL is plain http://, so images would cross the "
            "network unencrypted. Use https:// (CXR_AGENT_OPENAI_BASE_URL), or set "
            "CXR_AGENT_VLM_ALLOW_INSECURE_REMOTE=true if the network itself is trusted and encrypted."
        )
