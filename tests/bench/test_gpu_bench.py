"""bench/gpu/radvlm_gpu.py, checked on the CPU with its shrunken config (the real run needs a GPU)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "radvlm_gpu.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("radvlm_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["radvlm_gpu"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("radvlm_gpu", None)


def test_real_sizes_are_radvlms(gpu_bench):
    real = gpu_bench.REAL
    assert (real.text["hidden_size"], real.text["num_hidden_layers"], real.text["num_key_value_heads"],
            real.text["intermediate_size"], real.text["vocab_size"]) == (3584, 28, 4, 18944, 152064)
    assert (real.vision["hidden_size"], real.vision["num_hidden_layers"], real.vision["intermediate_size"],
            real.vision["patch_size"], real.vision["image_size"]) == (1152, 27, 4304, 14, 384)
    assert real.vectors == 1_000_000 and real.dim == 384


def test_tiny_run_on_cpu_measures_every_part(gpu_bench, tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu_bench.main(["--tiny", "--device", "cpu", "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {(r["benchmark"], r["metric"]): r for r in result["rows"]}
    groups = {g for g, _ in rows}
    assert groups == {"report", "follow-up", "verify x6", "retrieval"}
    assert all(r["value"] >= 0 for r in rows.values())
    ttft = rows[("report", "time to first token")]
    image_tokens = int(ttft["note"].split("(")[1].split()[0])
    assert image_tokens > 0 and rows[("report", "decode")]["value"] > 0
    # The cached image prefix reproduces the uncached answer exactly (fp32 on CPU).
    assert rows[("follow-up", "cached answer == uncached answer")]["value"] == 1.0
    assert {m for g, m in rows if g == "verify x6"} == {"serial, full prompts", "serial, cached image prefix",
                                                        "batched generate"}
    assert sum(g == "retrieval" for g, _ in rows) == 2  # CPU only: no GPU rows without CUDA
    assert result["machine"]["device"] == "cpu" and result["config"] == "tiny"


def test_asking_for_cuda_without_it_says_so(gpu_bench, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert gpu_bench.main(["--tiny", "--device", "cuda"]) == 2
    assert "no CUDA device here" in capsys.readouterr().err
