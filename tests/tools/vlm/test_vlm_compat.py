"""RadVLM was published with transformers 4.46; we run 5.x. Check what we can without the
16 GB of weights: a 4.46-style config (image_token_index, torch_dtype) parses into the real
architecture (~8.03 B parameters, built on the meta device), and checkpoints in the 4.46 key
layout (language_model.model.*, vision_tower.vision_model.*) load with no missing keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cxr_agent.settings import Settings
from tools.vlm.tiny import load_tiny, pinpoints

RADVLM_446_CONFIG = {
    "architectures": ["LlavaOnevisionForConditionalGeneration"],
    "model_type": "llava_onevision",
    "image_token_index": 151646,
    "video_token_index": 151647,
    "image_grid_pinpoints": pinpoints(384),
    "projector_hidden_act": "gelu",
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.46.0",
    "use_image_newline_parameter": True,
    "vision_aspect_ratio": "anyres_max_9",
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "full",
    "text_config": {
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584,
        "intermediate_size": 18944, "num_attention_heads": 28, "num_hidden_layers": 28,
        "num_key_value_heads": 4, "vocab_size": 152128, "max_position_embeddings": 32768,
        "rope_theta": 1000000.0, "torch_dtype": "bfloat16", "tie_word_embeddings": False, "rms_norm_eps": 1e-6,
    },
    "vision_config": {
        "model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 384, "intermediate_size": 4304,
        "num_attention_heads": 16, "num_hidden_layers": 26, "patch_size": 14, "vision_use_head": False,
    },
}


def test_446_config_builds_the_real_architecture(tmp_path: Path) -> None:
    from transformers import AutoConfig, LlavaOnevisionForConditionalGeneration

    (tmp_path / "config.json").write_text(json.dumps(RADVLM_446_CONFIG))
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.image_token_id == 151646 and config.video_token_id == 151647  # renamed keys still read
    assert config.dtype == torch.float16 and config.vision_aspect_ratio == "anyres_max_9"
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(config)
    n = sum(p.numel() for p in model.parameters())
    assert 7.9e9 < n < 8.2e9  # Qwen2-7B + SigLIP-so400m + projector


def test_446_weight_layout_loads_without_missing_keys(tiny_settings: Settings, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import LlavaOnevisionForConditionalGeneration

    model, _ = load_tiny(tiny_settings.data_dir)
    model.save_pretrained(tmp_path)
    keys = list(load_file(tmp_path / "model.safetensors"))
    assert any(k.startswith("language_model.model.") for k in keys)  # 5.x writes the 4.46 layout
    again, info = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ref = model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in again.state_dict().items())


@pytest.mark.real_weights
def test_real_radvlm_loads_and_answers(shared_data: Path) -> None:
    from tools.base import ToolRequest
    from tools.ingestion.loader import load_study
    from tools.vlm.tool import VLMTool
    from tools.vlm.weights import vlm_weight_status

    settings = Settings(model_profile="real")
    st = vlm_weight_status(settings)
    if not st.present:
        pytest.skip(f"RadVLM weights absent: {st.detail}")
    image = next((shared_data / "nih_cxr14").rglob("*.png"))
    ev = VLMTool(settings).run(ToolRequest(intent="report", study=load_study(image)))
    assert ev.ok, ev.error
    assert ev.report and len(ev.report.split()) > 5
