"""Negation, uncertainty and hypothetical/history scopes for report mentions, by medspaCy's ConText.

Why ConText: the scope logic (a cue's direction, where its scope ends: sentence end, a terminating word,
a cue of the same or a terminating category, pseudo-cues that look like negations) is the maintained
NegEx/ConText algorithm (Chapman et al.; medspaCy), not hand-written here. What is ours is the cue list:
radiology report wording (the NegEx/CheXpert cue phrases the v1.0 labeler used), in medspaCy's own
ConTextRule form, replacing medspaCy's default rules (written for clinical notes: there "evaluate for" is
a negation and "unlikely" negates backwards, both wrong for radiology).

Categories and what the labeler makes of them (knowledge/labeler.py):
- NEGATED_EXISTENCE -> absent          ("no", "without", "free of", "has resolved", "is not seen")
- POSSIBLE_EXISTENCE -> uncertain      ("possible", "may", "cannot exclude", "versus", "and/or"); it
  ENDS a negation's scope: "No pneumothorax, possible small effusion" -> effusion uncertain.
- HEDGE -> uncertain, but an adjective hedge inside a negated list stays negated and does not end the
  negation: "no focal consolidation, suspicious opacity, or effusion" -> all absent.
- HYPOTHETICAL -> uncertain            ("rule out", "evaluate for", "if")
- HISTORICAL -> uncertain              ("history of": a past condition named, not an image finding)
- PSEUDO (direction) -> nothing: "no change in", "not changed", "to suggest" mask the cue inside them.
- TERMINATE (direction) -> ends every scope: "but", "however", "there is", ";", ...

Tokenizer: spaCy's blank English pipeline (no model download); sentences are the labeler's own.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from cxr_agent.heap import settle

NEG, POSS, HEDGE, HYPO, HIST = "NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HEDGE", "HYPOTHETICAL", "HISTORICAL"
SPAN_GROUP = "cxr_mentions"

# (literal, category, direction[, max_scope]); a literal is matched token by token (lower case), a tuple of
# literals is one rule each. Order does not matter: ConText resolves overlaps and scopes.
_F, _B, _BI, _T, _P = "FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO"
CUES: tuple[tuple[Any, ...], ...] = (
    # negation, before the finding
    (("no", "not", "without", "negative for", "free of", "clear of", "absence of", "absent", "resolution of",
      "removal of", "nor", "neither", "none", "clearing of", "rather than",
      "instead of", "no evidence of", "no evidence for", "no signs of", "no sign of", "without evidence of",
      "no radiographic evidence of", "no findings of", "with no", "lack of", "interval resolution of",
      "resolving", "near resolution of", "no definite", "no significant", "no acute", "no new"), NEG, _F),
    # negation, after the finding ("the effusion has resolved", "pneumothorax is not seen")
    (("has resolved", "have resolved", "resolved", "has cleared", "have cleared", "cleared", "is absent",
      "are absent", "is gone", "has been removed", "have been removed", "removed", "is ruled out",
      "are ruled out", "ruled out", "negative", "no longer seen", "no longer present", "no longer visualized",
      "no longer evident", "no longer identified", "is no longer seen", "is not seen", "are not seen",
      "is not identified", "are not identified", "not identified", "not seen", "not visualized",
      "not demonstrated", "not appreciated", "not present", "not evident", "not apparent", "not detected",
      "not visible", "is not visible", "not noted", "not observed", "has decreased"), NEG, _B, 8),
    # uncertainty that opens a clause (and ends a preceding negation's scope)
    (("possible", "possibly", "probable", "probably", "questionably", "question of",
      "suspect", "may", "might", "could", "perhaps", "maybe", "suggest", "suggests",
      "suggesting", "suggestive of", "suggestion of", "differential", "differential diagnosis",
      "presumed", "presumably", "less likely", "unlikely", "cannot exclude", "can not exclude",
      "cannot rule out", "can not rule out",
      "may represent", "could represent", "may reflect", "could reflect", "consider", "considered",
      "concern for", "concerning for", "worrisome for", "suspicious for", "suspicion for", "suspicion of",
      "no evidence to rule out"), POSS, _F),
    (("is possible", "are possible", "is suspected", "cannot be entirely excluded", "not entirely excluded",
      "cannot be completely excluded", "not completely excluded", "may not be excluded", "not ruled out",
      "not excluded", "is not excluded", "are not excluded", "cannot be excluded", "can not be excluded",
      "cannot be ruled out", "can not be ruled out", "could not be excluded", "not well seen",
      "not clearly seen", "not well visualized", "poorly visualized", "poorly seen",
      "not well evaluated", "may be present", "could be present", "would be a consideration", "is a consideration",
      "remains a consideration", "is considered", "are considered"), POSS, _B, 8),
    (("versus", "vs", "and/or"), POSS, _BI, 3),
    (("?", "questionable", "suspected"), POSS, _BI, 6),
    # adjective hedges: uncertain on their own, but they do not reopen a negated list
    (("suspicious", "equivocal", "indeterminate", "uncertain", "unclear", "borderline", "subtle",
      "ill-defined", "minimal possible"), HEDGE, _F),
    # hypothetical / indication wording
    (("rule out", "r/o", "evaluate for", "evaluation for", "assess for", "to exclude", "if", "should"),
     HYPO, _F),
    (("history of", "h/o", "known history of"), HIST, _F),
    # pseudo-cues: contain a cue word but are no cue
    (("no change", "no change in", "no significant change", "no significant change in", "no interval change",
      "no interval change in", "no appreciable change", "no substantial change", "no definite change",
      "no increase", "no increase in", "no decrease", "no decrease in", "no worsening", "no worsening of",
      "no improvement", "no improvement in", "no significant interval change", "not changed",
      "not significantly changed", "not increased", "not decreased", "not improved", "without change",
      "without significant change", "without interval change", "not only", "no doubt", "gram negative",
      "no further", "to suggest", "not significantly", "no other",
      # "may be compatible with X": the "with" inside is no scope terminator
      "compatible with", "consistent with", "in keeping with", "associated with"), "PSEUDO", _P),
    # scope terminators
    (("but", "however", "although", "though", "except", "aside from", "apart from", "otherwise", "whereas",
      "while", "yet", "which", "with the exception of", "there is", "there are", "there has been", "with",
      "given", "secondary to", "due to", ";", ":", ", the", ", and", "and the", "and there", "and a",
      "and an"), "TERMINATE", _T),
)


def _rules() -> list[Any]:
    """CUES as ConTextRules; a literal may appear once (medspaCy keys its rules by literal)."""
    from medspacy.context import ConTextRule

    out, seen = [], set()
    for literals, category, direction, *rest in CUES:
        for lit in literals:
            if lit in seen:
                raise ValueError(f"context cue {lit!r} is listed twice (medspaCy keys rules by literal)")
            seen.add(lit)
            # "vs" as a token pattern (also "vs."): it keeps medspaCy's token Matcher non-empty (spaCy warns W036)
            pattern = [{"LOWER": {"IN": ["vs", "vs."]}}] if lit == "vs" else None
            out.append(ConTextRule(lit, category, pattern=pattern, direction=direction,
                                   max_scope=rest[0] if rest else None,
                                   terminated_by={POSS} if category == NEG else None))
    return out


@cache
def context() -> tuple[Any, Any]:
    """(nlp, ConText): spaCy's blank English tokenizer and ConText with the cues above (built once, ~0.3 s)."""
    import spacy
    from medspacy.context import ConText

    nlp = spacy.blank("en")
    ctx = ConText(nlp, rules=None, input_span_type="group", span_group_name=SPAN_GROUP, span_attrs=None,
                  prune_on_modifier_overlap=True, prune_on_target_overlap=False)
    ctx.add(_rules())
    settle()  # spaCy, medspaCy and what they import (torch, sklearn, nltk) stay out of full collections
    return nlp, ctx
