"""The report index moves to the GPU when faiss sees one (faiss-gpu + CUDA), and stays on the CPU when
the clone fails. faiss-gpu is absent here, so its two entry points are stood in for."""

from __future__ import annotations

import logging

import pytest
from kb_index_helpers import built_index_dir, kb_settings


class ClonedIndex:
    """What faiss.index_cpu_to_all_gpus returns, reduced to what the product calls: search on the copy."""

    def __init__(self, cpu) -> None:
        self.cpu, self.ntotal, self.d, self.searches = cpu, cpu.ntotal, cpu.d, 0

    def search(self, x, k):
        self.searches += 1
        return self.cpu.search(x, k)


@pytest.fixture
def one_gpu(monkeypatch):
    import faiss

    clones: list[ClonedIndex] = []

    def clone(index):
        clones.append(ClonedIndex(index))
        return clones[-1]

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", clone, raising=False)
    return clones


def test_loaded_index_searches_on_the_gpu_copy(one_gpu):
    from tools.retrieval.index import ReportIndex

    path = built_index_dir()  # built before the GPU appears, or by an earlier test
    one_gpu.clear()
    idx = ReportIndex.load(path, kb_settings(path))
    hits = idx.search("There is a small left pleural effusion.", k=3)
    assert len(one_gpu) == 1 and one_gpu[0].searches == 1  # the search ran on the GPU copy
    assert len(hits[0]) == 3 and any("pleural_effusion" in h.labels for h in hits[0])
    idx.close()


def test_failed_gpu_clone_falls_back_to_the_cpu_index(monkeypatch, caplog):
    import faiss

    from tools.retrieval.index import ReportIndex

    def broken(index):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", broken, raising=False)
    with caplog.at_level(logging.WARNING):
        idx = ReportIndex.load(built_index_dir(), kb_settings(built_index_dir()))
        hits = idx.search("There is a small left pleural effusion.", k=3)
    assert len(hits[0]) == 3 and "searching on CPU" in caplog.text
    idx.close()
