"""VLMTool: RadVLM as a CxrTool (report, locate, yes/no finding question, chat, verification).

Turns a ToolRequest into a prompt, runs the configured backend, parses the answer (boxes back
to the ORIGINAL image, yes/no -> Status) and returns Evidence. Never raises: every failure is
Evidence(ok=False) with a message that names the problem and the fix.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from knowledge.evidence import Artifact, Box, Evidence, FindingCall, Status
from knowledge.vocabulary import FINDING_SET, display_name, normalize
from tools.base import ToolRequest
from tools.vlm import prompts
from tools.vlm.backends.base import BackendError, GenerationResult, VLMBackend
from tools.vlm.geometry import DEFAULT_MAX_SIDE, ModelImage, prepare_image
from tools.vlm.parsing import ParsedBoxes, parse_boxes, parse_yes_no

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.study import Study

log = logging.getLogger(__name__)

TOOL_NAME = "vlm"


class VLMTool:
    name = TOOL_NAME
    intents = frozenset({"report", "locate", "finding_question", "chat"})

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        backend: VLMBackend | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
        pad_square: bool = False,
        label_reports: bool = False,
    ) -> None:
        """``label_reports``: also label the generated report into FindingCalls (source "vlm").
        Off by default because the graph labels Evidence.report itself."""
        self._settings = settings
        self._backend = backend
        self._backend_lock = threading.Lock()
        self.max_side = max_side
        self.pad_square = pad_square
        self.label_reports = label_reports
        self._images: OrderedDict[str, ModelImage] = OrderedDict()
        self._images_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from cxr_agent.settings import get_settings

            self._settings = get_settings()
        return self._settings

    @property
    def backend(self) -> VLMBackend:
        if self._backend is None:
            with self._backend_lock:
                if self._backend is None:
                    from tools.vlm.backends import make_backend

                    self._backend = make_backend(self.settings)
        return self._backend

    def model_image(self, study: Study) -> ModelImage:
        """The 8-bit RGB (downscaled, optionally padded) image the model sees, memoised per study."""
        with self._images_lock:
            hit = self._images.get(study.id)
            if hit is not None:
                self._images.move_to_end(study.id)
                return hit
        mi = prepare_image(study.pixels, max_side=self.max_side, pad_square=self.pad_square)
        with self._images_lock:
            self._images[study.id] = mi
            while len(self._images) > 16:
                self._images.popitem(last=False)
        return mi

    def _meta(self, res: GenerationResult | None, prompt: str) -> dict[str, Any]:
        b = self._backend
        meta: dict[str, Any] = {
            "backend": getattr(b, "name", self.settings.vlm_backend),
            "model": getattr(b, "model_id", self.settings.vlm_model_id),
            "profile": getattr(b, "profile", self.settings.model_profile),
            "prompt": prompt,
        }
        if res is not None:
            meta.update(
                cache_hit=res.cache_hit,
                kv_prefix_hit=res.kv_prefix_hit,
                prompt_tokens=res.prompt_tokens,
                new_tokens=res.new_tokens,
                ttft_ms=None if res.ttft_s is None else round(res.ttft_s * 1000, 1),
                generation_ms=None if res.latency_s is None else round(res.latency_s * 1000, 1),
            )
        if meta["profile"] == "tiny":
            from cxr_agent.settings import DEMO_WARNING

            meta["demo"] = True
            meta["warning"] = DEMO_WARNING
        return meta

    def _generate(
        self,
        study: Study,
        turns: list[prompts.ChatTurn],
        thread_id: str | None,
        on_token: Callable[[str], None] | None,
    ) -> tuple[GenerationResult, ModelImage]:
        mi = self.model_image(study)
        res = self.backend.generate(
            mi.image,
            turns,
            cache_key=(thread_id, study.id),
            max_new_tokens=self.settings.vlm_max_new_tokens,
            on_token=on_token,
        )
        return res, mi

    @staticmethod
    def _label(finding: str | None, phrase: str | None) -> str | None:
        if phrase and phrase.strip():
            return phrase.strip()
        return display_name(finding) if finding else None

    @staticmethod
    def _box_artifacts(parsed: ParsedBoxes, finding: str | None, answer: str) -> list[Artifact]:
        return [
            Artifact(kind="boxes", finding=finding, box=box, description=box.label or answer[:120],
                     meta={"model_coords": list(mc)})
            for box, mc in zip(parsed.boxes, parsed.model_coords, strict=True)
        ]

    # ------------------------------------------------------------------ the tool
    def run(self, request: ToolRequest) -> Evidence:
        t0 = time.perf_counter()
        prompt = ""
        try:
            if request.intent not in self.intents:
                return Evidence.failure(self.name, f"the VLM tool does not handle intent {request.intent!r} "
                                        f"(it handles: {', '.join(sorted(self.intents))})")
            if request.study is None:
                return Evidence.failure(self.name, "the VLM needs an image: attach a chest X-ray (PNG, JPEG or DICOM)")
            finding = request.finding if request.finding in FINDING_SET else None
            phrase = request.phrase.strip() if request.phrase and request.phrase.strip() else None
            if finding is None and phrase:
                finding = normalize(phrase)
            if request.intent == "report":
                prompt = prompts.report_prompt()
                turns = prompts.conversation(prompt)
            elif request.intent == "locate":
                if finding is None and phrase is None:
                    prompt = request.text.strip()  # e.g. "where is the abnormality?": ask as typed
                    if not prompt:
                        return Evidence.failure(self.name, "nothing to locate: name a finding or a phrase")
                else:
                    prompt = prompts.locate_prompt(finding, phrase)
                turns = prompts.conversation(prompt)
            elif request.intent == "finding_question":
                if finding is None and phrase is None:
                    return Evidence.failure(self.name, "a yes/no finding question needs a finding (e.g. 'pleural effusion')")
                prompt = prompts.question_prompt(finding, phrase)
                turns = prompts.conversation(prompt)
            else:  # chat
                prompt = request.text
                turns = prompts.conversation(request.text, request.history)
            res, mi = self._generate(request.study, turns, request.thread_id, request.on_token)
            ev = self._evidence(request.intent, res, mi, finding, phrase, prompt)
        except BackendError as exc:
            return Evidence.failure(self.name, str(exc), latency_ms=_ms(t0), meta=self._meta(None, prompt))
        except Exception as exc:  # never raise into the graph
            log.exception("VLM tool failed")
            return Evidence.failure(self.name, f"the VLM failed: {type(exc).__name__}: {exc}",
                                    latency_ms=_ms(t0), meta=self._meta(None, prompt))
        ev.latency_ms = _ms(t0)
        return ev

    def _evidence(self, intent: str, res: GenerationResult, mi: ModelImage, finding: str | None,
                  phrase: str | None, prompt: str) -> Evidence:
        answer = res.text
        meta = self._meta(res, prompt)
        if not answer:
            return Evidence.failure(self.name, "the VLM returned an empty answer", meta=meta)
        label = self._label(finding, phrase)
        parsed = parse_boxes(answer, mi.view, label=label)
        if parsed.rejected:
            meta["boxes_rejected"] = parsed.rejected
        artifacts = self._box_artifacts(parsed, finding, answer)
        calls: list[FindingCall] = []
        if intent == "report":
            if self.label_reports:
                calls = self._label_report(answer)
            return Evidence(tool=self.name, report=answer, answer=answer, calls=calls, artifacts=artifacts, meta=meta)
        if intent == "locate":
            if finding is not None:
                calls = [FindingCall(finding=finding, status=Status.present, source=self.name, box=b, text=answer)
                         for b in parsed.boxes]
                if not parsed.boxes and parse_yes_no(answer) is Status.absent:
                    calls = [FindingCall(finding=finding, status=Status.absent, source=self.name, text=answer)]
            return Evidence(tool=self.name, answer=answer, calls=calls, artifacts=artifacts, meta=meta)
        if intent == "finding_question":
            status = parse_yes_no(answer)
            if finding is not None:
                box = parsed.boxes[0] if parsed.boxes and status is Status.present else None
                calls = [FindingCall(finding=finding, status=status, source=self.name, box=box, text=answer)]
            meta["status"] = status.value
            return Evidence(tool=self.name, answer=answer, calls=calls, artifacts=artifacts, meta=meta)
        return Evidence(tool=self.name, answer=answer, artifacts=artifacts, meta=meta)

    def _label_report(self, report: str) -> list[FindingCall]:
        try:
            from knowledge.labeler import label_report
        except ImportError:
            return []
        return [c.model_copy(update={"source": self.name}) for c in label_report(report)]

    def verify_finding(
        self,
        study: Study,
        finding: str,
        *,
        thread_id: str | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Evidence:
        """The reconciler's targeted re-ask: yes/no about ``finding`` AND its box if present.
        One FindingCall (status from the yes/no; the first box if the answer is yes); an answer
        that says no yet draws a box is inconsistent and becomes 'uncertain'."""
        t0 = time.perf_counter()
        prompt = ""
        try:
            if finding not in FINDING_SET:
                return Evidence.failure(self.name, f"unknown finding id {finding!r}")
            prompt = prompts.verify_prompt(finding)
            res, mi = self._generate(study, prompts.conversation(prompt), thread_id, on_token)
            meta = self._meta(res, prompt)
            meta["verification"] = True
            if not res.text:
                return Evidence.failure(self.name, "the VLM returned an empty answer", meta=meta, latency_ms=_ms(t0))
            parsed = parse_boxes(res.text, mi.view, label=display_name(finding))
            status = parse_yes_no(res.text)
            if status is Status.absent and parsed.boxes:
                status = Status.uncertain
                meta["inconsistent"] = "answered no but drew a box"
            box: Box | None = parsed.boxes[0] if parsed.boxes and status is Status.present else None
            if parsed.rejected:
                meta["boxes_rejected"] = parsed.rejected
            meta["status"] = status.value
            call = FindingCall(finding=finding, status=status, source=self.name, box=box, text=res.text)
            return Evidence(tool=self.name, answer=res.text, calls=[call],
                            artifacts=self._box_artifacts(parsed, finding, res.text), meta=meta,
                            latency_ms=_ms(t0))
        except BackendError as exc:
            return Evidence.failure(self.name, str(exc), latency_ms=_ms(t0), meta=self._meta(None, prompt))
        except Exception as exc:
            log.exception("VLM verification failed")
            return Evidence.failure(self.name, f"the VLM failed: {type(exc).__name__}: {exc}",
                                    latency_ms=_ms(t0), meta=self._meta(None, prompt))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 1)
