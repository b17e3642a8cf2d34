"""UI test environment: the real graph under the tiny profile, made quick enough for a UI suite.

- a small prior-report corpus (80 real IU reports) so the first report builds its index in seconds
  instead of embedding all 3,927 reports (the app's first-use path still runs: no index exists);
- VLM generations capped at a few dozen tokens (random weights write noise either way).
The variables are applied to os.environ only for the tests that run the app in-process (and
restored after); the browser test passes them to its own subprocess.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ui_env(tmp_path_factory) -> dict[str, str]:
    """Environment overrides for running the app under test."""
    from kb_index_helpers import write_prior_corpus

    root = tmp_path_factory.mktemp("ui-env")
    corpus = write_prior_corpus(root / "priors.csv")
    return {
        "CXR_AGENT_CORPUS": str(corpus),
        "CXR_AGENT_INDEX_DIR": str(root / "index"),
        "CXR_AGENT_VLM_MAX_NEW_TOKENS": "24",
        "CXR_AGENT_MODEL_PROFILE": "tiny",
    }


@pytest.fixture(scope="module")
def app_env(ui_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Apply ui_env to this process for AppTest (which runs the script in-process), then restore."""
    import streamlit as st

    from cxr_agent.settings import get_settings

    saved = {k: os.environ.get(k) for k in ui_env}
    os.environ.update(ui_env)
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    yield ui_env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()

