"""Session-wide test environment: offline hubs, tiny models, a private data dir, the shared real data."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# Before anything imports huggingface_hub/transformers: a hub lookup hangs ~144 s here otherwise.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ["CXR_AGENT_MODEL_PROFILE"] = "tiny"
os.environ["CXR_AGENT_OFFLINE"] = "1"
_DATA = Path(tempfile.mkdtemp(prefix="cxr-agent-test-"))
atexit.register(shutil.rmtree, _DATA, True)  # a suite run leaves nothing behind in /tmp
os.environ["CXR_AGENT_DATA_DIR"] = str(_DATA)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from cxr_agent.settings import Settings  # noqa: E402

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


# --- graph fixtures (tests/graph, tests/cli): a graph factory over scripted tools, real images -------

_ids = itertools.count()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_profile="tiny", offline=True, data_dir=tmp_path, checkpointer_url="memory", tool_timeout_s=10)


@pytest.fixture
def make_graph(settings: Settings):
    """make_graph(*tools, builtin=False, **setting_overrides) -> compiled graph over those tools."""
    from graph import build_graph

    def make(*tools: Any, builtin: bool = False, checkpointer: Any = None, **over: Any):
        s = settings.model_copy(update=over) if over else settings
        return build_graph(s, tools=list(tools), builtin_tools=builtin, plugins=False, checkpointer=checkpointer)

    return make


@pytest.fixture
def thread():
    """A fresh thread config per call."""
    return lambda: {"configurable": {"thread_id": f"t{next(_ids)}"}}


@pytest.fixture(scope="session")
def cxr_images(shared_data: Path) -> list[Path]:
    imgs = sorted((shared_data / "nih_cxr14" / "images").glob("*.png"))
    if len(imgs) < 8:
        pytest.skip("fewer than 8 NIH images in the shared data")
    return imgs


@pytest.fixture(scope="session")
def cxr_image(cxr_images: list[Path]) -> Path:
    return cxr_images[0]


# --- a throwaway PostgreSQL server ---------------


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session, on 127.0.0.1, stopped and deleted after.

    Never skips: ``make test`` installs Debian's postgresql (``make postgres``) where it is absent."""
    from postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's server: postgresql://postgres@127.0.0.1:<port>/<db>."""
    import psycopg

    name = f"t{next(_ids)}_{os.getpid()}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, shared_data):
    """A real Orthanc on loopback holding the shared DICOM samples, as (server, samples); stopped after the
    module (tests/orthanc_server.py)."""
    from orthanc_server import Orthanc, store_samples

    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield server, store_samples(server, shared_data / "dicom")
    finally:
        server.stop()
    assert server.proc.poll() is not None  # stopped, not left running
