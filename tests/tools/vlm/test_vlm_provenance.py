"""The VLM's Evidence says which model, weights and prompts produced it, and whether each ask's prompt
was fixed (the study alone) or built from the user's words; fixed-prompt asks share the study's cached
image features and KV prefix across conversations, user-words asks keep an entry of their own."""

from __future__ import annotations

from fake_radvlm import FakeRadVLM  # tests/tools/vlm/fake_radvlm.py (test-only backend)

from cxr_agent.settings import Settings
from tools.base import ToolRequest
from tools.ingestion.study import Study
from tools.provenance import prompt_id
from tools.vlm.backends.base import CacheKey
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.tiny import SEED
from tools.vlm.tool import VLMTool


def test_report_evidence_names_model_weights_and_prompts(tiny_settings: Settings, tiny_backend: TransformersBackend,
                                                         study: Study) -> None:
    tool = VLMTool(tiny_settings, backend=tiny_backend)
    ev = tool.run(ToolRequest(intent="report", study=study, thread_id="p"))
    assert ev.ok, ev.error
    meta = ev.meta
    assert meta["model_id"] == "tiny-random-llava-onevision" and meta["weights"] == f"random:seed={SEED}"
    assert [a["task"] for a in meta["asks"]] == ["report", "classification", "detection"]
    assert meta["fixed_prompt"] is True and all(a["fixed_prompt"] for a in meta["asks"])
    system = tool.adapter.system or ""
    texts = [meta["prompts"][a["task"]] for a in meta["asks"]]
    assert [a["prompt_id"] for a in meta["asks"]] == [
        prompt_id("radvlm", [t for t in (system, text) if t]) for text in texts]
    again = tool.run(ToolRequest(intent="report", study=study, thread_id="another"))
    assert again.meta["prompt_id"] == meta["prompt_id"] and meta["prompt_id"].startswith("radvlm:")


def test_user_words_asks_are_not_fixed_and_their_prompt_id_follows_the_words(tiny_settings: Settings,
                                                                             study: Study) -> None:
    tool = VLMTool(tiny_settings, backend=FakeRadVLM())
    chat = tool.run(ToolRequest(intent="chat", text="Is the heart enlarged?", study=study, thread_id="c"))
    other = tool.run(ToolRequest(intent="chat", text="Any effusion?", study=study, thread_id="c"))
    question = tool.run(ToolRequest(intent="finding_question", finding="cardiomegaly", study=study, thread_id="c"))
    assert chat.meta["fixed_prompt"] is False and chat.meta["prompt_id"] != other.meta["prompt_id"]
    assert question.meta["fixed_prompt"] is False and question.meta["asks"][0]["task"] == "question"
    assert chat.meta["model_id"] == "fake-radvlm" and chat.meta["weights"] is None  # unknown: never invented
    verified = tool.verify(study, ["cardiomegaly"], thread_id="c")[0]
    assert verified.meta["fixed_prompt"] is False and verified.meta["prompt_id"].startswith("radvlm:")


def test_second_thread_report_reuses_the_study_features_and_prefix(tiny_settings: Settings,
                                                                  tiny_backend: TransformersBackend,
                                                                  study: Study) -> None:
    tiny_backend.cache_clear()
    tool = VLMTool(tiny_settings, backend=tiny_backend)
    before = dict(tiny_backend.counts)
    first = tool.run(ToolRequest(intent="report", study=study, thread_id="thread-a"))
    after_first = dict(tiny_backend.counts)
    second = tool.run(ToolRequest(intent="report", study=study, thread_id="thread-b"))
    after_second = dict(tiny_backend.counts)
    assert first.ok and second.ok
    assert after_first["encodes"] - before["encodes"] == 1 and after_first["prefills"] - before["prefills"] == 1
    assert after_second == after_first  # nothing encoded or prefilled again for thread b
    assert second.meta["cache_hit"] is True and second.meta["kv_prefix_hit"] is True
    assert second.report == first.report
    shared = CacheKey(None, study.id, shared=True)
    assert tiny_backend._cache_get(shared) is not None and tiny_backend.cache_info()["entries"] == 1


def test_user_words_asks_keep_an_entry_per_thread(tiny_settings: Settings, tiny_backend: TransformersBackend,
                                                  study: Study) -> None:
    tiny_backend.cache_clear()
    tool = VLMTool(tiny_settings, backend=tiny_backend)
    tool.run(ToolRequest(intent="report", study=study, thread_id="thread-a"))
    counts = dict(tiny_backend.counts)
    chat = tool.run(ToolRequest(intent="chat", text="Is the heart enlarged?", study=study, thread_id="thread-b"))
    assert chat.ok and chat.meta["cache_hit"] is True and chat.meta["kv_prefix_hit"] is True
    assert tiny_backend.counts == counts  # its entry started from the study's shared one: no image work
    shared = tiny_backend._cache_get(CacheKey(None, study.id, shared=True))
    own = tiny_backend._cache_get(CacheKey("thread-b", study.id))
    assert own is not None and own is not shared and own.features is shared.features
    assert tiny_backend._cache_get(CacheKey("thread-a", study.id)) is None  # the report asks used the shared one
    assert tiny_backend.cache_info()["entries"] == 2
