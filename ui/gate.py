"""What every page shows before the app itself: the disclaimers, an open-network warning, the login.

Separate from the sections so the safety notices and the login gate are read in one place and
always run first, whatever the rest of the page does.
"""

from __future__ import annotations

import streamlit as st

from cxr_agent.settings import DEMO_WARNING, DISCLAIMER, Settings


def header(settings: Settings) -> None:
    if settings.is_demo:
        st.warning(DEMO_WARNING, icon=":material/warning:")
    st.info(DISCLAIMER, icon=":material/info:")
    address = str(st.get_option("server.address") or "")
    if not settings.ui_require_login and not is_loopback(address):
        st.error(
            f"This app listens on {address or 'every network interface'} without a login: anyone who can reach "
            "it can upload studies and read every answer. Set CXR_AGENT_UI_REQUIRE_LOGIN=true with an [auth] "
            "section in .streamlit/secrets.toml (Streamlit's OIDC login), or bind to 127.0.0.1 behind an "
            "authenticating proxy. See README, 'Deploying for a team'.",
            icon=":material/lock_open:",
        )


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach (an empty address binds every interface)."""
    import ipaddress

    if address in {"localhost"}:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def require_login(settings: Settings) -> bool:
    """With ``ui_require_login``, Streamlit's OIDC login (st.login) gates the page. True = may continue."""
    if not settings.ui_require_login:
        return True
    try:
        if st.user.is_logged_in:
            st.sidebar.button("Log out", on_click=st.logout)
            return True
    except Exception as exc:  # noqa: BLE001 - no [auth] section: say so instead of opening the app
        st.error(f"Login is required (CXR_AGENT_UI_REQUIRE_LOGIN) but not configured: {type(exc).__name__}. "
                 "Add an [auth] section to .streamlit/secrets.toml.")
        return False
    st.info("Please log in to use cxr-agent.", icon=":material/lock:")
    st.button("Log in", on_click=st.login, type="primary")
    return False
