"""A turn that names several findings ("is there a pneumothorax or an effusion?", then "where are they?").

The VLM is asked about each finding with the same trained instruction a one-finding turn uses, all in one
batch on the cached image, and the answers are folded into one Evidence: a call (or a location) per
finding, the raw answers in ``meta['answers']`` by finding, so the reply can answer every finding asked.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from knowledge.evidence import Artifact, Evidence, FindingCall
from knowledge.vocabulary import FINDING_SET, display_name
from tools.base import elapsed_ms
from tools.vlm.asks import Ask

if TYPE_CHECKING:
    from tools.base import ToolRequest
    from tools.vlm.adapters import Prompt

# The VLM tool (tools/vlm/tool.py, which calls ask_each): passed in, never imported, so neither module
# imports the other's.
VLMTool = Any


def named_findings(request: ToolRequest) -> list[str]:
    """The vocabulary findings the turn names, in order, without repeats."""
    return list(dict.fromkeys(f for f in (getattr(request, "findings", ()) or ()) if f in FINDING_SET))


def _asks(tool: VLMTool, intent: str, key: str, findings: list[str]) -> list[tuple[str, Prompt]]:
    if intent == "locate":
        return [(f, spec[0]) for f in findings if (spec := tool._locate_prompt(key, f, None)) is not None]
    return [(f, p) for f in findings
            if (p := tool.adapter.prompt("question", key=key, target=display_name(f))) is not None]


def ask_each(tool: VLMTool, request: ToolRequest, findings: list[str], cancel: threading.Event | None,
             t0: float) -> Evidence:
    """The yes/no question (finding_question) or the grounding ask (locate) for each finding, one batch."""
    study = request.study
    assert study is not None  # the tool checked
    asks = _asks(tool, request.intent, study.id, findings)
    if not asks:
        return Evidence.failure(tool.name, f"the {tool.adapter.family} model has no instruction for this ask")
    turns = [tool._turns(p) for _, p in asks]
    answers = tool._batch(study, turns, request.thread_id, cancel)
    view = tool.model_image(study).view
    meta = tool._meta(answers[0] if answers else None, "\n".join(p.text for _, p in asks))
    meta.update(task=asks[0][1].task, prompts={f: p.text for f, p in asks}, answers={}, batch_size=len(asks))
    truncated = tool._provenance(meta, [Ask(p.task, conv, res, fixed=False, finding=f)
                                        for (f, p), conv, res in zip(asks, turns, answers, strict=True)])
    calls: list[FindingCall] = []
    tasks: list[str] = []
    artifacts: list[Artifact] = []
    for (f, p), res in zip(asks, answers, strict=True):
        meta["answers"][f] = res.text
        if not res.text:
            continue
        parsed = tool.adapter.parse(p.task, res.text, view, target=display_name(f), finding=f, source=tool.name)
        tool._fold(parsed, meta, calls, tasks)
        artifacts += tool._artifacts(parsed.locations, res.text)

    latency = elapsed_ms(t0)
    if not calls and not artifacts and not any(meta["answers"].values()):
        return Evidence.failure(tool.name, "the VLM returned an empty answer", meta=meta, latency_ms=latency)
    meta["call_tasks"] = tasks
    answer = "\n".join(f"{display_name(f)}: {(meta['answers'][f] or '(no answer)').strip()}" for f, _ in asks)
    return Evidence(tool=tool.name, answer=answer, calls=calls, artifacts=artifacts, meta=meta, truncated=truncated,
                    latency_ms=latency)
