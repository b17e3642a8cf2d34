"""Which VLM families run, and with which names and settings: one adapter each, side by side.

``vlm_family`` picks the primary VLM (tool name ``vlm``); ``vlm_compare`` optionally adds a second
family as an independent image source (tool name ``vlm-<family>``, e.g. ``vlm-medgemma``), so the two
models cross-check each other: every call carries its tool's name as ``source``, so the reconciler
counts them as two votes, and a re-ask goes to the tool that disagreed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tools.vlm.tool import TOOL_NAME, VLMTool

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

# Where each family's weights come from (hub id; the backend also takes a local path).
MODEL_IDS = {"radvlm": "KrauthammerLab/RadVLM", "medgemma": "google/medgemma-4b-it",
             "medgemma15": "google/medgemma-1.5-4b-it"}


def family_settings(settings: Settings, family: str) -> Settings:
    """Settings for one family: its adapter and its model id.

    The selected family (``vlm_family``) keeps ``vlm_model_id`` / ``openai_model`` as set, unless they
    name another family's default. The comparison family never inherits them (a local path configured for
    one model must not load the other): it uses ``vlm_compare_model_id``, else its own default id, and over
    the OpenAI-compatible backend ``openai_compare_base_url`` / ``openai_compare_api_key`` when set.
    """
    if family not in MODEL_IDS:
        raise ValueError(f"unknown VLM family {family!r}; known: {', '.join(sorted(MODEL_IDS))}")
    defaults = set(MODEL_IDS.values())
    update: dict[str, str] = {"vlm_family": family}
    if family != settings.vlm_family:
        own = settings.vlm_compare_model_id or MODEL_IDS[family]
        extra: dict[str, object] = {}
        if settings.openai_compare_base_url:  # its own server: one vLLM process serves one model
            extra["openai_base_url"] = settings.openai_compare_base_url
        if settings.openai_compare_api_key is not None:
            extra["openai_api_key"] = settings.openai_compare_api_key
        return settings.model_copy(update={**update, "vlm_model_id": own, "openai_model": own, **extra})
    if settings.vlm_model_id in defaults:
        update["vlm_model_id"] = MODEL_IDS[family]
    if settings.openai_model in defaults:
        update["openai_model"] = MODEL_IDS[family]
    return settings.model_copy(update=update)


def selected(settings: Settings) -> list[tuple[str, str]]:
    """(tool name, family) of every VLM to run: the primary first, then the comparison, if any."""
    primary = str(getattr(settings, "vlm_family", "radvlm"))
    out = [(TOOL_NAME, primary)]
    second = str(getattr(settings, "vlm_compare", "") or "")
    if second and second != primary:
        out.append((f"{TOOL_NAME}-{second}", second))
    return out


class CompareVLMTool(VLMTool):
    """The second family (``settings.vlm_compare``) as its own tool, ``vlm-<family>``."""

    def __init__(self, settings: Settings | None = None, **kw: object) -> None:
        if settings is None:
            from cxr_agent.settings import get_settings

            settings = get_settings()
        family = str(getattr(settings, "vlm_compare", "") or "")
        if not family:
            raise ValueError("CompareVLMTool needs CXR_AGENT_VLM_COMPARE (radvlm, medgemma or medgemma15)")
        super().__init__(family_settings(settings, family), name=f"{TOOL_NAME}-{family}", **kw)  # type: ignore[arg-type]
        self.label = f"the second VLM ({family})"


def vlm_tools(settings: Settings) -> list[VLMTool]:
    """One VLMTool per selected family, named as ``selected`` says."""
    return [VLMTool(family_settings(settings, fam), name=name) for name, fam in selected(settings)]
