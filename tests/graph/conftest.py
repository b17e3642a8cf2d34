"""Graph test fixtures: a graph factory over scripted tools, real images from the shared data."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from cxr_agent.settings import Settings

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
