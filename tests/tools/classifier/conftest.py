"""Fixtures for the classifier tests: one tiny (random-weight) DenseNet per session, a real image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxr_agent.settings import Settings
from tools.ingestion.study import Study


@pytest.fixture(scope="session")
def tiny_settings(test_data_dir) -> Settings:
    return Settings(model_profile="tiny", data_dir=test_data_dir, classifier_device="cpu")


@pytest.fixture(scope="session")
def tiny_tool(tiny_settings):
    from tools.classifier.tool import ClassifierTool

    return ClassifierTool(tiny_settings)


def load_png(path) -> Study:
    """PIL -> Study (tools/imaging.load_study belongs to another module; this keeps the tests independent)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return Study.from_array(arr, source_format="png")


@pytest.fixture(scope="session")
def real_study(shared_data) -> Study:
    return load_png(shared_data / "nih_cxr14" / "images" / "00000506_013.png")


@pytest.fixture(scope="session")
def real_studies(shared_data) -> list[Study]:
    names = ["00000506_013.png", "00000002_000.png"]
    return [load_png(shared_data / "nih_cxr14" / "images" / n) for n in names]


@pytest.fixture(autouse=True)
def _one_torch_thread_when_oversubscribed():
    """On a shared, oversubscribed box OpenMP's spin-waits make 2 torch threads 10-20x slower than 1
    (measured here); results do not depend on it. Restored after each test."""
    import os

    import torch

    before = torch.get_num_threads()
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
