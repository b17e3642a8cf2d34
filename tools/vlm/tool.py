"""VLMTool: a vision-language model as a CxrTool (report, locate, yes/no question, chat, re-asks).

Model-agnostic: what to ask and how to read the answer come from the family's adapter
(tools/vlm/adapters/), how to run it from the backend (tools/vlm/backends/). A report turn runs the
report AND the family's classification (one call per label) and detection (boxes) asks on the same
cached image; locate turns send grounding / detection asks and return boxes. Grounding boxes are
locations only (artifacts), never presence calls. Re-asks of one turn go out as one batch. Never
raises: every failure is Evidence(ok=False) with a message that names the problem and the fix.

Every Evidence says what produced it (``meta``: ``model_id``, ``weights``, ``prompt_id``, and per ask in
``asks``: its task, prompt id, whether its prompt was fixed or carried the user's words, whether it was cut
off). An answer stopped at the token limit marks the Evidence ``truncated`` (its text is incomplete, so
its silence says nothing) and is named in ``meta["truncated_asks"]``; what it did say is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from knowledge.evidence import Artifact, Evidence, FindingCall
from knowledge.vocabulary import FINDING_SET, display_name, normalize
from tools.base import ToolRequest, builtin_intents, elapsed_ms
from tools.provenance import prompt_id
from tools.vlm import prompts
from tools.vlm.adapters import Adapter, Location, Parsed, Prompt, get_adapter
from tools.vlm.adapters.base import FIXED_PROMPT, LOCATION_ONLY, Task
from tools.vlm.asks import Ask
from tools.vlm.backends.base import BackendError, CacheKey, GenerationResult, VLMBackend
from tools.vlm.geometry import DEFAULT_MAX_SIDE, ModelImage, prepare_image
from tools.vlm.several import ask_each, named_findings

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.ingestion.study import Study

log = logging.getLogger(__name__)

TOOL_NAME = "vlm"
# FindingCall.task (agreed with the reconciler, /work/notes/interfaces.md) when knowledge has the field.
_CALL_TASK = {"classification": "classification", "detection": "detection", "foreign_objects": "detection",
              "question": "question"}


class VLMTool:
    name = TOOL_NAME
    intents = builtin_intents("vlm")  # from the one intent table (tools/base.py)
    image_source = True
    writes_report = True
    verifies = True
    label = "the VLM"  # how replies name it
    cacheable = True  # its fixed-prompt asks (meta["fixed_prompt"]) depend on the study alone

    def __init__(self, settings: Settings | None = None, *, backend: VLMBackend | None = None,
                 adapter: Adapter | None = None, max_side: int = DEFAULT_MAX_SIDE, pad_square: bool = False,
                 label_reports: bool = False, report_extras: tuple[Task, ...] = ("classification", "detection"),
                 name: str = TOOL_NAME) -> None:
        """``label_reports``: also label the generated report into FindingCalls (the graph labels
        Evidence.report itself, so off by default). ``report_extras``: the asks that run beside every
        report on the same image (classification: an explicit statement per label; detection: boxes).
        ``name``: the tool's name and every call's source (two VLM families side by side need two names)."""
        self.name = name
        self._settings = settings
        self._backend = backend
        self._adapter = adapter
        self._backend_lock = threading.Lock()
        self.max_side = max_side
        self.pad_square = pad_square
        self.label_reports = label_reports
        self.report_extras = report_extras
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
    def adapter(self) -> Adapter:
        if self._adapter is None:
            self._adapter = get_adapter(str(getattr(self.settings, "vlm_family", "radvlm")))
        return self._adapter

    @property
    def compares_priors(self) -> bool:
        """Whether its family has a documented two-image prompt (the capability the graph reads)."""
        return bool(getattr(self.adapter, "compares_priors", False))

    def compare(self, prior: Study, current: Study, *, finding: str | None = None, thread_id: str | None = None,
                cancel: threading.Event | None = None, on_token: Callable[[str], None] | None = None) -> Evidence:
        """The prior and the current film read together in one fresh prompt (``finding``: about that one
        finding), its change statements in ``meta["changes"]`` (tools/vlm/comparing.py); ``on_token``: the
        answer as it is written, as for any other ask."""
        from tools.vlm.comparing import compare_with_prior

        return compare_with_prior(self, prior, current, finding=finding, cancel=cancel, on_token=on_token)

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
        pad = self.pad_square or bool(getattr(self.adapter, "pad_square", False))  # a family trained on squares
        mi = prepare_image(study.pixels, max_side=self.max_side, pad_square=pad)
        with self._images_lock:
            self._images[study.id] = mi
            while len(self._images) > 16:
                self._images.popitem(last=False)
        return mi

    def shown_tokens(self, on_token: Callable[[str], None] | None) -> Callable[[str], None] | None:
        """The token sink with what the family never shows held back (e.g. a thinking trace), or None."""
        shown = getattr(self.adapter, "stream_filter", None)
        return shown(on_token) if on_token is not None and callable(shown) else on_token

    def _meta(self, res: GenerationResult | None, prompt: str) -> dict[str, Any]:
        b = self._backend
        model_id = getattr(b, "model_id", self.settings.vlm_model_id)
        weights = getattr(b, "weights", None)
        meta: dict[str, Any] = {
            "backend": getattr(b, "name", self.settings.vlm_backend),
            "model": model_id,
            "model_id": model_id,
            "weights": weights if isinstance(weights, str) else None,
            "profile": getattr(b, "profile", self.settings.model_profile),
            "family": self.adapter.family,
            "prompt": prompt,
        }
        if res is not None:
            meta.update(
                cache_hit=res.cache_hit, kv_prefix_hit=res.kv_prefix_hit, prompt_tokens=res.prompt_tokens,
                new_tokens=res.new_tokens, ttft_ms=None if res.ttft_s is None else round(res.ttft_s * 1000, 1),
                generation_ms=None if res.latency_s is None else round(res.latency_s * 1000, 1),
            )
        if meta["profile"] == "tiny":
            from cxr_agent.settings import DEMO_WARNING

            meta["demo"] = True
            meta["warning"] = DEMO_WARNING
        return meta

    def _turns(self, prompt: Prompt, history: list[dict[str, str]] | None = None) -> list[prompts.ChatTurn]:
        return prompts.conversation(prompt.text, history, image_first=prompt.image_first, system=self.adapter.system)

    def _provenance(self, meta: dict[str, Any], asks: list[Ask]) -> bool:
        """Record which prompts produced this Evidence and which answers were cut off; True if any was."""
        family = self.adapter.family
        meta["prompt_id"] = prompt_id(family, [t.text for a in asks for t in a.turns])
        meta["fixed_prompt"] = bool(asks) and all(a.fixed for a in asks)
        meta["asks"] = [{"task": a.task, **({"finding": a.finding} if a.finding else {}),
                         "prompt_id": prompt_id(family, [t.text for t in a.turns]), "fixed_prompt": a.fixed,
                         "truncated": a.truncated} for a in asks]
        cut = [a.name for a in asks if a.truncated]
        if cut:
            meta["truncated_asks"] = cut
            meta["max_new_tokens"] = int(self.settings.vlm_max_new_tokens)
        return bool(cut)

    @staticmethod
    def cache_key(study: Study, thread_id: str | None, *, fixed: bool) -> CacheKey:
        """Fixed-prompt asks share the study's cached image across threads; anything else stays in its thread."""
        return CacheKey(None, study.id, shared=True) if fixed else CacheKey(thread_id, study.id)

    def _generate(self, study: Study, turns: list[prompts.ChatTurn], thread_id: str | None,
                  on_token: Callable[[str], None] | None, cancel: threading.Event | None = None, *,
                  fixed: bool = False) -> GenerationResult:
        kwargs: dict[str, Any] = {"cache_key": self.cache_key(study, thread_id, fixed=fixed),
                                  "max_new_tokens": self.settings.vlm_max_new_tokens, "on_token": on_token}
        if cancel is not None and _accepts(self.backend.generate, "cancel"):
            kwargs["cancel"] = cancel
        return self.backend.generate(self.model_image(study).image, turns, **kwargs)

    def _batch(self, study: Study, convs: list[list[prompts.ChatTurn]], thread_id: str | None,
               cancel: threading.Event | None, *, fixed: bool = False) -> list[GenerationResult]:
        """One batched call when the backend can (shared image prefix / concurrent requests), else serial."""
        if not convs:
            return []
        image, key = self.model_image(study).image, self.cache_key(study, thread_id, fixed=fixed)
        batch = getattr(self.backend, "generate_batch", None)
        if callable(batch):
            return list(batch(image, convs, cache_key=key, max_new_tokens=self.settings.vlm_max_new_tokens, cancel=cancel))
        return [self._generate(study, turns, thread_id, None, cancel, fixed=fixed) for turns in convs]

    @staticmethod
    def _mark(calls: list[FindingCall], task: str) -> list[FindingCall]:
        tag = _CALL_TASK.get(task, task)
        if "task" in FindingCall.model_fields:
            return [c.model_copy(update={"task": tag}) for c in calls]
        return calls

    @staticmethod
    def _artifacts(locs: list[Location], answer: str) -> list[Artifact]:
        return [Artifact(kind="boxes", finding=loc.finding, box=loc.box, description=loc.target or answer[:120],
                         meta={"task": loc.task, "location_only": loc.task in LOCATION_ONLY, "target": loc.target,
                               "model_coords": list(loc.model_coords)})
                for loc in locs]

    def _fold(self, parsed: Parsed, meta: dict[str, Any], calls: list[FindingCall], tasks: list[str]) -> list[FindingCall]:
        marked = self._mark(parsed.calls, parsed.task)
        calls += marked
        tasks += [_CALL_TASK.get(parsed.task, parsed.task)] * len(marked)
        meta.setdefault("shapes", {})[parsed.task] = parsed.shape
        if parsed.notes:
            meta.setdefault("notes", []).extend(parsed.notes)
        if parsed.rejected:
            meta.setdefault("boxes_rejected", []).extend(parsed.rejected)
        return marked

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
            cancel = getattr(request, "cancel", None)
            if request.intent == "report":
                return self._report(request, cancel, t0)
            key = request.study.id
            if request.intent == "locate" and not self.adapter.localises:
                return Evidence(tool=self.name, answer=f"{self.adapter.display_name} does not localise findings (its "
                                "model card documents no box format); the classifier's heatmap is the only location.",
                                meta={**self._meta(None, ""), "localises": False}, latency_ms=elapsed_ms(t0))
            if request.intent in ("locate", "finding_question") and len(several := named_findings(request)) > 1:
                return ask_each(self, request, several, cancel, t0)
            if request.intent == "locate":
                spec = self._locate_prompt(key, finding, phrase)
                if spec is None:
                    return Evidence.failure(self.name, "nothing to locate: name a finding, a region or a phrase")
                p, target = spec
            elif request.intent == "finding_question" and (finding is not None or phrase is not None):
                target = phrase if finding is None else display_name(finding)
                p = self.adapter.prompt("question", key=key, target=target)  # type: ignore[assignment]
            elif request.intent == "finding_question" and not prompts.sanitize(request.text):
                return Evidence.failure(self.name, "a yes/no finding question needs a finding (e.g. 'pleural effusion')")
            else:  # chat, or a question naming nothing the vocabulary knows: the user's own words, sanitised
                target = ""
                p = Prompt("chat", prompts.sanitize(request.text) or "Describe this chest X-ray.")
            if p is None:
                return Evidence.failure(self.name, f"the {self.adapter.family} model has no instruction for this ask")
            prompt = p.text
            history = request.history if request.intent == "chat" else None
            turns = self._turns(p, history)
            fixed = p.task in FIXED_PROMPT
            res = self._generate(request.study, turns, request.thread_id, request.on_token, cancel, fixed=fixed)
            ev = self._answer(p, res, request.study, finding, target, Ask(p.task, turns, res, fixed=fixed))
        except BackendError as exc:
            return Evidence.failure(self.name, str(exc), latency_ms=elapsed_ms(t0), meta=self._meta(None, prompt))
        except Exception as exc:  # never raise into the graph
            log.exception("VLM tool failed")
            return Evidence.failure(self.name, f"the VLM failed: {type(exc).__name__}: {exc}",
                                    latency_ms=elapsed_ms(t0), meta=self._meta(None, prompt))
        ev.latency_ms = elapsed_ms(t0)
        return ev

    def _locate_prompt(self, key: str, finding: str | None, phrase: str | None) -> tuple[Prompt, str] | None:
        """Which trained ask locates this: devices -> foreign objects; a finding -> grounding (else phrase
        grounding with its name); a region -> region grounding; another phrase -> phrase grounding;
        nothing named -> detection of every abnormality."""
        a = self.adapter
        if finding == "support_devices":
            p = a.prompt("foreign_objects", key=key)
            if p:
                return p, display_name(finding)
        if finding is not None:
            name = display_name(finding).lower()
            p = a.prompt("grounding", key=key, target=finding) or a.prompt("phrase_grounding", key=key, target=phrase or name)
            return (p, name) if p else None
        if phrase:
            p = a.prompt("region", key=key, target=phrase) or a.prompt("phrase_grounding", key=key, target=phrase)
            return (p, phrase) if p else None
        p = a.prompt("detection", key=key)
        return (p, "") if p else None

    def _answer(self, p: Prompt, res: GenerationResult, study: Study, finding: str | None, target: str,
                ask: Ask) -> Evidence:
        meta = self._meta(res, p.text)
        meta["task"] = p.task
        truncated = self._provenance(meta, [ask])
        if not res.text:
            return Evidence.failure(self.name, "the VLM returned an empty answer", meta=meta)
        parsed = self.adapter.parse(p.task, res.text, self.model_image(study).view, target=target, finding=finding,
                                    source=self.name)
        calls: list[FindingCall] = []
        tasks: list[str] = []
        self._fold(parsed, meta, calls, tasks)
        if tasks:
            meta["call_tasks"] = tasks
        if p.task == "question" and calls:
            meta["status"] = calls[0].status.value
        return Evidence(tool=self.name, answer=res.text, calls=calls, truncated=truncated,
                        artifacts=self._artifacts(parsed.locations, res.text), meta=meta)

    def _report(self, request: ToolRequest, cancel: threading.Event | None, t0: float) -> Evidence:
        study, key = request.study, request.study.id  # type: ignore[union-attr]
        rp = self.adapter.prompt("report", key=key)
        if rp is None:
            return Evidence.failure(self.name, f"the {self.adapter.family} model has no report instruction")
        report_turns = self._turns(rp)
        on_token = self.shown_tokens(request.on_token)  # e.g. a thinking trace is not streamed either
        res = self._generate(study, report_turns, request.thread_id, on_token, cancel, fixed=True)  # type: ignore[arg-type]
        said = getattr(self.adapter, "answer_text", None)  # e.g. a thinking trace, dropped before the report
        if callable(said):
            res = replace(res, text=said("report", res.text))
        meta = self._meta(res, rp.text)
        asks = [Ask("report", report_turns, res, fixed=True)]
        if not res.text:
            self._provenance(meta, asks)
            return Evidence.failure(self.name, "the VLM returned an empty answer", meta=meta, latency_ms=elapsed_ms(t0))
        calls: list[FindingCall] = self._label_report(res.text) if self.label_reports else []
        tasks: list[str] = ["report"] * len(calls)
        artifacts: list[Artifact] = []
        extras = [p for t in self.report_extras if (p := self.adapter.prompt(t, key=key)) is not None]
        meta["prompts"] = {"report": rp.text, **{p.task: p.text for p in extras}}
        extra_turns = [self._turns(p) for p in extras]
        try:
            answers = self._batch(study, extra_turns, request.thread_id, cancel, fixed=True)  # type: ignore[arg-type]
        except BackendError as exc:  # the report stands; say what is missing
            answers = []
            meta.setdefault("notes", []).append(f"{', '.join(p.task for p in extras)} not run: {exc}")
        view = self.model_image(study).view  # type: ignore[arg-type]
        for p, turns, ans in zip(extras, extra_turns, answers, strict=False):
            asks.append(Ask(p.task, turns, ans, fixed=p.task in FIXED_PROMPT))
            meta.setdefault("answers", {})[p.task] = ans.text
            parsed = self.adapter.parse(p.task, ans.text, view, source=self.name)
            self._fold(parsed, meta, calls, tasks)
            artifacts += self._artifacts(parsed.locations, ans.text)
        meta["call_tasks"] = tasks
        truncated = self._provenance(meta, asks)  # a cut-off report keeps its calls, but is marked
        return Evidence(tool=self.name, report=res.text, answer=res.text, calls=calls, artifacts=artifacts,
                        meta=meta, truncated=truncated, latency_ms=elapsed_ms(t0))

    def _label_report(self, report: str) -> list[FindingCall]:
        try:
            from knowledge.labeler import label_report
        except ImportError:
            return []
        return self._mark([c.model_copy(update={"source": self.name}) for c in label_report(report)], "report")

    # ------------------------------------------------------------------ re-asks
    def verify(self, study: Study, findings: list[str], *, thread_id: str | None = None,
               cancel: threading.Event | None = None) -> list[Evidence]:
        """The reconciler's re-asks, one batch: the conversational yes/no per finding, then (one more
        batch) a grounding ask for each finding the model maintains without a box, so the
        verification rule can compare the VLM's box with the classifier's heatmap. One Evidence per
        finding, in order; a finding id outside the vocabulary is a failure for that finding only."""
        t0 = time.perf_counter()
        out: list[Evidence | None] = [None] * len(findings)
        todo: list[tuple[int, str, Prompt]] = []
        for i, f in enumerate(findings):
            p = self.adapter.prompt("question", key=study.id, target=display_name(f)) if f in FINDING_SET else None
            if p is None:
                out[i] = Evidence.failure(self.name, f"unknown finding id {f!r}" if f not in FINDING_SET else
                                          f"the {self.adapter.family} model has no yes/no instruction")
            else:
                todo.append((i, f, p))
        grounding: dict[int, Ask] = {}
        try:
            question_turns = [self._turns(p) for _, _, p in todo]
            answers = self._batch(study, question_turns, thread_id, cancel)
            view = self.model_image(study).view
            parsed = [self.adapter.parse("question", r.text, view, target=display_name(f), finding=f, source=self.name)
                      for (_, f, _), r in zip(todo, answers, strict=True)]
            try:
                grounding = self._locate_maintained(study, todo, parsed, thread_id, cancel)
            except BackendError as exc:  # the yes/no answers stand without boxes
                for pr in parsed:
                    pr.notes.append(f"no grounding box: {exc}")
        except BackendError as exc:
            return [e or Evidence.failure(self.name, str(exc), latency_ms=elapsed_ms(t0), meta=self._meta(None, ""))
                    for e in out]
        except Exception as exc:  # noqa: BLE001 - never raise into the graph
            log.exception("VLM verification failed")
            return [e or Evidence.failure(self.name, f"the VLM failed: {type(exc).__name__}: {exc}", latency_ms=elapsed_ms(t0))
                    for e in out]
        for k, ((i, f, p), turns, res, pr) in enumerate(zip(todo, question_turns, answers, parsed, strict=True)):
            meta = self._meta(res, p.text)
            asks = [Ask("question", turns, res, fixed=False, finding=f)] + ([grounding[k]] if k in grounding else [])
            truncated = self._provenance(meta, asks)
            meta["verification"] = True
            meta["batch_size"] = len(todo)
            meta["status"] = pr.calls[0].status.value if pr.calls else "uncertain"
            if pr.notes:
                meta["notes"] = pr.notes
                if "answered no but drew a box" in pr.notes:
                    meta["inconsistent"] = "answered no but drew a box"
            if pr.rejected:
                meta["boxes_rejected"] = pr.rejected
            calls = self._mark(pr.calls, "verification")
            out[i] = Evidence(tool=self.name, answer=res.text if res.text else None, calls=calls, truncated=truncated,
                              artifacts=self._artifacts(pr.locations, res.text), meta=meta, latency_ms=elapsed_ms(t0))
            if not res.text:
                out[i] = Evidence.failure(self.name, "the VLM returned an empty answer", meta=meta, latency_ms=elapsed_ms(t0))
        return [e for e in out if e is not None]

    def _locate_maintained(self, study: Study, todo: list[tuple[int, str, Prompt]], parsed: list[Parsed],
                           thread_id: str | None, cancel: threading.Event | None) -> dict[int, Ask]:
        """For each 'present' answer without a box: one batched grounding ask; its first box becomes
        the call's box (a location for a finding the model just affirmed). Returns those asks by position."""
        need = [(k, f) for k, ((_, f, _), pr) in enumerate(zip(todo, parsed, strict=True))
                if pr.calls and pr.calls[0].status.value == "present" and pr.calls[0].box is None]
        asks = [(k, f, spec[0]) for k, f in need if (spec := self._locate_prompt(study.id, f, None)) is not None
                and spec[0].task in LOCATION_ONLY] if self.adapter.localises else []
        if not asks:
            return {}
        view = self.model_image(study).view
        turns = [self._turns(p) for *_, p in asks]
        done: dict[int, Ask] = {}
        for (k, f, p), conv, res in zip(asks, turns, self._batch(study, turns, thread_id, cancel), strict=True):
            done[k] = Ask(p.task, conv, res, fixed=False, finding=f)
            g = self.adapter.parse(p.task, res.text, view, target=display_name(f).lower(), finding=f, source=self.name)
            if g.locations:
                pr = parsed[k]
                pr.calls[0] = pr.calls[0].model_copy(update={"box": g.locations[0].box})
                pr.locations += g.locations
                pr.notes.append(f"box from the {p.task} ask: {p.text}")
        return done

    def verify_finding(self, study: Study, finding: str, *, thread_id: str | None = None,
                       on_token: Callable[[str], None] | None = None) -> Evidence:
        """One re-ask (``verify`` with one finding); kept for callers written before ``verify``."""
        return self.verify(study, [finding], thread_id=thread_id)[0]


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (a backend written before ``cancel`` existed does not)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
