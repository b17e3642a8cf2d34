"""Session-wide test environment: offline hubs, tiny models, a private data dir, the shared real data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub/transformers: a hub lookup hangs ~144 s here otherwise.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ["CXR_AGENT_MODEL_PROFILE"] = "tiny"
os.environ["CXR_AGENT_OFFLINE"] = "1"
_DATA = Path(tempfile.mkdtemp(prefix="cxr-agent-test-"))
os.environ["CXR_AGENT_DATA_DIR"] = str(_DATA)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """../shared/data beside the checkout (CI puts shared/ there), or $CXR_AGENT_SHARED_DATA."""
    candidates = [os.environ.get("CXR_AGENT_SHARED_DATA"), REPO_ROOT.parent / "shared" / "data", Path("/work/shared/data")]
    for c in candidates:
        if c and Path(c, "README.md").exists():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("real test data ../shared/data not found (set CXR_AGENT_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    return _DATA
