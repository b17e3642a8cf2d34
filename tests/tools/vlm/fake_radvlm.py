"""A test-only backend that answers exactly in RadVLM's trained shapes (../shared/RADVLM.md).

It recognises each instruction by its own copy of the trained templates (independent of the
adapter's lists, so a prompt the adapter invents is caught as ``untrained``) and answers in that
task's shape. Never product code: the model's real outputs come only from the model.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Hashable

from PIL import Image

from tools.vlm.backends.base import GenerationResult
from tools.vlm.prompts import ChatTurn

_REPORT = re.compile(r"(radiology report|report your findings|detailed analysis|provide a report|concise report|"
                     r"brief radiology|report summarizing|summary radiology)", re.I)
_CLASSIFY = re.compile(r"^(Can you tell me if there are any abnormalities on this image\?|Are there (any )?abnormalities"
                       r"( present)? on this (Chest X-ray|image)\?|Please identify (the )?abnormalities (on|from) this "
                       r"(X-ray|image)\.|Can you point out if there are any abnormalities on this Chest X-ray\?|"
                       r"Tell me about abnormalities on this image|Do any abnormalities appear on this Chest X-ray\?|"
                       r"Identify abnormalities on this image|Could you indicate if there are any lesions on this "
                       r"Chest X-ray\?)$")
_DETECT = re.compile(r"(abnormalit|lesion).*(location|positions|where|located)", re.I)
_FOREIGN = re.compile(r"foreign objects", re.I)
_GROUND = re.compile(r"^(?:Where is the|Can you point out the|What's the location of the|Identify where the|"
                     r"Where exactly is the|Could you specify where to find the|Highlight the|Show me the|"
                     r"Where should I look to find the|Can you locate the|Please point to the|Indicate the position of the|"
                     r"Describe the location of the|Where on this image is the|Point out the exact location of the|"
                     r"How can I identify the|Where is the|Can you highlight the|Indicate where the|"
                     r"Describe where to find the) (.+?)(?:'s)? (?:located|position|location|is|found|area|situated|"
                     r"on|in)\b")
_PHRASE = re.compile(r"^(Please locate the following sentence|Identify the position of the following phrase in the CXR|"
                     r"Please show me the location of|Highlight the area of the following observation on the image|"
                     r"Where on the image can you see the following observation|Find the region corresponding to|"
                     r"Please indicate where this finding is located|Mark the area where you observe): (.+)$")
_QUESTION = re.compile(r"^Is there any (.+)\?$")

REPORT = "Mild cardiomegaly. Small right pleural effusion. Right internal jugular line in place. No pneumothorax."
CLASSIFICATION = "The following abnormalities are identified: cardiomegaly, pleural effusion and support devices."
DETECTION = ("Sure! I can find a cardiomegaly located at the coordinates [0.3, 0.45, 0.78, 0.82]; a pleural effusion "
             "located at the coordinates [0.05, 0.6, 0.35, 0.92] and [0.66, 0.7, 0.93, 0.9]; an aortic enlargement "
             "located at the coordinates [0.45, 0.2, 0.6, 0.35].")
FOREIGN = "Foreign objects are detected at these positions: [0.4, 0.05, 0.52, 0.5]."


class FakeRadVLM:
    """Answers like RadVLM; ``yes`` decides the conversational yes/no (finding -> bool); the tasks in
    ``cut_off`` answer as a model stopped at its token limit would: the first half of the answer, truncated."""

    name = "fake-radvlm"
    model_id = "fake-radvlm"

    def __init__(self, profile: str = "tiny", yes: Callable[[str], bool] | None = None,
                 cut_off: frozenset[str] = frozenset()) -> None:
        self.profile = profile
        self.cut_off = cut_off
        self.yes = yes or (lambda target: target in ("cardiomegaly", "pleural effusion"))
        self.prompts: list[str] = []
        self.tasks: list[str] = []
        self.untrained: list[str] = []
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def answer(self, text: str) -> tuple[str, str]:
        if m := _QUESTION.match(text):
            target = m.group(1).lower()
            return "question", (f"Yes, there is {target}." if self.yes(target) else f"No, there is no {target}.")
        if _FOREIGN.search(text):
            return "foreign_objects", FOREIGN
        if _CLASSIFY.match(text):
            return "classification", CLASSIFICATION
        if m := _PHRASE.match(text):
            return "phrase_grounding", "This sentence is located at the coordinates [0.1, 0.55, 0.4, 0.9] on the image."
        if _DETECT.search(text):
            return "detection", DETECTION
        if m := _GROUND.match(text):
            return "grounding", f"The {m.group(1)} is located at the coordinates [0.12, 0.55, 0.4, 0.83] on the image."
        if _REPORT.search(text):
            return "report", REPORT
        return "untrained", "I am not sure what you are asking."

    def check_turns(self, turns: list[ChatTurn]) -> None:
        assert turns[0].role == "user" and turns[0].image_first, "RadVLM gets the image first in the first user turn"

    def generate(self, image: Image.Image, turns: list[ChatTurn], *, cache_key: Hashable | None = None,
                 max_new_tokens: int | None = None, min_new_tokens: int | None = None,
                 on_token: Callable[[str], None] | None = None, cancel: threading.Event | None = None) -> GenerationResult:
        self.check_turns(turns)
        text = turns[-1].text
        task, out = self.answer(text)
        with self._lock:
            self.prompts.append(text)
            self.tasks.append(task)
            if task == "untrained" and len(turns) == 1:
                self.untrained.append(text)
        truncated = task in self.cut_off
        if truncated:
            words = out.split(" ")
            out = " ".join(words[: max(1, len(words) // 2)])
        if on_token is not None:
            for piece in out.split(" "):
                on_token(piece + " ")
        return GenerationResult(text=out, truncated=truncated, cache_hit=True, prompt_tokens=len(text),
                                new_tokens=len(out.split()))

    def generate_batch(self, image: Image.Image, conversations: list[list[ChatTurn]], *,
                       cache_key: Hashable | None = None, max_new_tokens: int | None = None,
                       cancel: threading.Event | None = None) -> list[GenerationResult]:
        self.batches.append(len(conversations))
        return [self.generate(image, c, cache_key=cache_key, max_new_tokens=max_new_tokens) for c in conversations]
