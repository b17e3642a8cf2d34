"""A real LangGraph Server (``langgraph dev``, in-memory runtime) serving the repo's langgraph.json.

Started once per module (tests/langgraph_server.py: 127.0.0.1, free port, temp working directory
holding ``.langgraph_api/``, private data dir, tiny models, small prior-report corpus); stopped after.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langgraph_server import LangGraphServer, langgraph_dev


@pytest.fixture(scope="module")
def langgraph_server(tmp_path_factory) -> Iterator[LangGraphServer]:
    with langgraph_dev(tmp_path_factory.mktemp("langgraph-server")) as server:
        yield server
