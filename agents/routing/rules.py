"""Route one user turn to an intent, the tools it needs and the finding it names.

Offline, fast and deterministic: ordered regular-expression rules over the lower-cased turn,
plus finding extraction that combines router-specific colloquial phrases ("big heart", "ETT tip",
"r/o PNA") with the shared vocabulary's ``normalize()``. An optional LLM router
(``route_with_llm``) can sit in front and always falls back to these rules.

Rule order (first match wins) is the whole policy, so it is written down once, in ``_classify``:
explain > similar_cases > locate > strong report cue > finding question > weak report cue > chat.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from agents.routing.mentions import (  # noqa: F401 - re-exported
    _clean,
    clean_cut,
    extract_findings,
    find_mentions,
    find_regions,
    is_survey,
    occasion_only,
)
from knowledge.vocabulary import REGIONS, display_name, normalize_region
from tools.base import IMAGE_INTENTS, INTENT_TOOLS  # noqa: F401 - the one intent table (tool contract)

Intent = Literal["report", "locate", "finding_question", "similar_cases", "explain", "chat"]


class Reading(BaseModel):
    """One way to read an unclear turn, and what would run if the user picks it."""

    intent: Intent
    finding: str | None = Field(None, description="Canonical finding id this reading asks about, if any.")
    phrase: str | None = Field(None, description="The user's own words for a target outside the vocabulary.")
    score: float = Field(0.0, description="The router's confidence in this reading (0-1).")


class Clarify(BaseModel):
    """The router is unsure: ask back with the two likeliest readings instead of running tools on a guess."""

    about: Literal["intent", "finding"] = Field(description="What the router is unsure of.")
    readings: list[Reading] = Field(min_length=2, max_length=2, description="The two likeliest readings, best first.")
    reason: str = ""


class Route(BaseModel):
    """Where a turn goes: the intent, its target finding (canonical id) or phrase, and what the question
    asks beyond yes/no (side, size or device position, change over time)."""

    intent: Intent
    finding: str | None = Field(None, description="Canonical finding id the turn asks about on the image, if any "
                                "(none for a general question: chat).")
    findings: list[str] = Field(default_factory=list, description="Every finding the turn names, in order.")
    phrase: str | None = Field(None, description="Free-text target: what to ground (locate), or the user's words "
                               "for a finding outside the vocabulary (finding question), e.g. 'free air'.")
    region: str | None = Field(None, description="Anatomical region the locate turn names (a knowledge.vocabulary "
                               "REGIONS id, e.g. 'right_hemidiaphragm'): a location to ground, never a finding.")
    needs_image: bool = Field(False, description="True when the intent needs a study and the turn has none: ask for one.")
    reason: str = ""
    method: Literal["rules", "llm"] = "rules"
    side: Literal["right", "left", "bilateral"] | None = Field(None, description="The side the turn asks about.")
    aspect: Literal["rule_out", "position", "size"] | None = Field(
        None, description="What a yes/no does not settle: exclusion, a device's position, or size/severity.")
    asks_comparison: bool = Field(False, description="The turn asks about change against an earlier image.")
    scores: dict[str, float] = Field(default_factory=dict, description="The intent classifier's probabilities "
                                     "when it was consulted (empty when the rules decided alone).")
    clarify: Clarify | None = Field(None, description="Set when the router is unsure: the reply asks back.")


def as_route(value: Route | Mapping[str, Any] | None) -> Route | None:
    """The state's ``route`` as a Route: checkpoints written before it was kept typed, and a LangGraph
    Server's strict serializer, hand it back as a plain dict (keys it no longer has, e.g. ``tools``, are
    ignored)."""
    if value is None or isinstance(value, Route):
        return value
    if isinstance(value, Mapping):
        return Route.model_validate(dict(value))
    raise TypeError(f"route must be a Route or a mapping of its fields, not {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Intent cues
# --------------------------------------------------------------------------------------------


def _rx(*alts: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alts))


_EXPLAIN = _rx(
    r"\b(?:why|whay|wyh)\b",  # "whay do you think so?"
    r"\bhow (?:did|do|would|come) (?:you|it|the model)\b",
    r"\bwhat (?:made|makes|led) (?:you|it)\b",
    r"\bexplain\b|\b(?:explian|expalin|exlpain|explan)\b",
    r"\bjustif(?:y|ication)\b",
    r"\breasoning\b|\brationale\b",
    r"\bwhat(?:'s| is| was) (?:the|your) (?:evidence|basis|source|confidence)\b",
    r"\bbased on what\b|\bon what basis\b|\bwhat(?:'s| is| was| are| were) (?:this|that|it|these|those) based on\b",
    r"\bwhat did (?:the )?(?:classifier|vlm|model|models|radvlm|tools?|retrieval) (?:say|think|find|show|see)\b",
    r"\bwhere did (?:that|this|it|the [\w\s-]{1,40}?) come from\b",
    r"\b(?:do|did) (?:the )?(?:classifier|vlm|models?) (?:and (?:the )?(?:classifier|vlm|models?) )?(?:agree|disagree)\b",
    r"\bconflict(?:ing)?\b|\bdisagree(?:ment)?\b",
    r"\b(?:agree|concur) with (?:the )?(?:classifier|vlm|model|radvlm|tool|heatmap)\b",
    r"\bhow did you (?:decide|conclude|get|arrive|come up)\b",
    r"\b(?:from where|how) (?:do |did )?you know\b",
    # "from where you take the idea of the nodule?", "what gave you that impression?"
    r"\b(?:from )?where (?:do |did )?you (?:get|got|take|took|draw|drew) (?:the |that |this |your )?(?:idea|impression|"
    r"notion|conclusion)\b|\bwhat gave you (?:the |that |this )?(?:idea|impression)\b",
    r"\bshow (?:me )?your (?:work|reasoning|thinking|steps|logic|evidence)\b",
    r"\bwhy not\b",
)
# A reference back to an earlier answer asks for an explanation unless it asks to locate something
# ("you said cardiomegaly?" vs "where's the opacity you mentioned").
_EXPLAIN_REF = _rx(r"\byou (?:said|called|flagged|mentioned|reported|found|concluded)\b")
# Cues that only mean "explain" once the thread has something to explain; on a first turn
# "how sure are you there's a PTX?" is a finding question.
_EXPLAIN_SOFT = _rx(
    r"\bhow (?:sure|confi?d\w*|certain)\b|\bconfidence\b|\bcertainty\b",  # "how confidnet are you"
    r"\bwhich (?:tool|model|source)s?\b",
    r"\b(?:sources?|src)\b(?! of)",
    r"\b(?:classifier|vlm|model|op[- ]?point|operating[- ]point)(?: op[- ]?point)? (?:scores?|probabilit(?:y|ies)|output)\b",
    r"\bare you (?:sure|certain|confident)\b",
    r"\b(?:are|were) you (?:unsure|uncertain|not sure)\b|\bunsure\b|\bscores?\b",
    r"\b(?:is|are) (?:that|this|it|these) (?:certain|sure|definite|reliable|right|correct)\b",
    r"\breliab(?:le|ility)\b|\btrust(?:worthy)?\b",  # "is the cardiomegaly call reliable?": about our answer
    r"\bbasis\b|^conf\s*\?|\bsure\s*\?+$|^y\s*\?+$",  # "basis?", "conf?", "cmg - sure?", "y?" after an answer
    r"\b(?:the|your|any) reasons?\b",  # "give me the reasons"
)
# "why" questions about the patient/image itself are not questions about our reasoning.
# "please explain me this x-ray": a read of the image, not of our reasoning
_EXPLAIN_IMAGE = (r"\bexplain (?:to )?(?:me )?(?:this|the|my) (?:chest )?(?:x-?ray|film|image|radiograph|cxr|study|"
                  r"scan)\b")
_EXPLAIN_EXCLUDE = _rx(r"\bwhy (?:is|are|does|do) (?:the|this|his|her|their) (?:patient|heart|lung|lungs|film|image)\b",
                       _EXPLAIN_IMAGE)

_SIMILAR = _rx(
    # "simlar", "similiar"; the object with it, even misspelt ("simlar reprots"), so it is no report cue
    r"\b(?:similar|sim(?:l|il{1,2}i)ar)(?: (?:cases|reports?|reprots?|raports?|films|studies|images|exams|x-?rays|"
    r"patients|ones))?\b",
    r"\bsim (?:cases|reports|films|studies|images|exams)\b|\bk?nn (?:cases|reports|films|studies|search)\b",
    r"\blook(?:s|ing)? (?:a ?lot |just )?like (?:this|it|these)\b",
    r"\bcomparable\b|\banalogous\b|\bprecedents?\b",
    r"\b(?:prior|previous|past|other|reference|matching|related|archived?) (?:cases|reports|studies|films|exams|"
    r"images|patients)\b",
    r"\b(?:images|films|studies|x-?rays|cases|reports|examples|ones|patients) (?:like|resembling) (?:this|it|these)\b",
    r"\bpriors\b",
    r"\bretrieve\b|(?<!what did the )\bretrieval\b|\bnearest neighbou?rs?\b",  # not "what did the retrieval find?"
    r"\bsearch (?:the |our )?(?:database|archive|reports|corpus|index|knowledge base|kb)\b",
    # "find emphysema cases for teaching": a word or two of what the cases show between
    r"\b(?:find|pull|get|show|fetch)(?: me)? (?:some |a few |other |more )?(?:(?!(?:a|an|the|few|this|that|my)\b)[\w-]+ ){0,2}?"
    r"(?:cases|reports|examples|studies)\b",
    r"\bexamples? of\b",
    r"\blike this one\b|\bcass?es like\b|\breports like\b|\bmore like (?:this|it|these)\b",  # "casses like this"
    # "old reports that mention a pectus deformity": the archive's reports, searched for words
    r"\b(?:reports|cases|studies|films|exams) (?:that |which )?(?:mention(?:s|ing)?|describ(?:e|es|ing)|document(?:s|ing)?|"
    r"contain(?:s|ing)?)\b",
    r"\bhave we seen\b|\bseen (?:this|it) before\b",
    r"\b(?:report|case|image|film)s? (?:archive|library)\b|\b(?:the|our) archive\b",
)

_LOCATE = _rx(
    r"\bwhere(?:'s| is| are| was| were| exactly|abouts)?\b|\bwh?er\b|\bwhre\b|\bwere (?:is|are)\b",  # misspelt
    r"\bshow(?: me)?\b",
    r"\bpoint(?: me)? (?:out|to|at)\b",
    r"\bzoom(?: in)? (?:on|to|into)\b",
    r"\blocali[sz](?:e|ed|ation)\b|\blocation\b|\blocated\b",
    r"^loc\b|\bloc\s*\??$",  # "loc of effusion?", "ETT tip loc" (not "+LOC" in a history: loss of consciousness)
    r"\bhighlight\b|\bmark\b|\bcircle\b|\boutline\b|\bannotate\b|\bpinpoint\b|\bdemarcate\b|\bdelineate\b",
    r"\bindicate (?!whether|if|how|what|why|that)",
    r"\b(?:put|place|drop|add|draw) (?:a |an |the )?(?:marker|pin|arrow|circle|outline|square|rectangle|frame|ring|border|"
    r"dot|shape)\b",
    r"\bshade\b|\bcolou?r in\b",
    r"\b(?:draw|put|give|place)(?: me)? (?:a |the )?(?:bounding )?box\b|\bbounding box\b|\bbbox\b",
    r"^(?:please |pls |can you |could you )?box\b|\bbox (?:the|it|them|around)\b",
    r"\bground(?:ing)?\b(?![- ]?glass)",
    r"\b(?:which|what) (?:side|lobe|zone|lung|level|ribs?)\b",
    r"\b(?:on|in) the (?:left|right)(?: side)? or (?:on |in )?(?:the )?(?:left|right)\b",  # "is it on the left or the right?"
    r"(?<!left )(?<!right )(?<!\br )(?<!\bl )(?<!\brt )(?<!\blt )(?<!rigt )(?<!lft )(?<!other )(?<!same )(?<!both )"
    r"(?<!opposite )(?<!that )(?<!this )"
    r"(?<!whole )(?<!one )(?<!either )(?<!each )\bside\s*\?$",  # "ptx - side?"
    r"\b(?:which|what) (?:part|area|portion|segment|region)s? of\b",
    r"\bheat ?map\b|\bsaliency\b|\bgrad-?cam\b|\boverlay\b",
)
# "show me" followed by a report-ish object is not a locate request.
_LOCATE_EXCLUDE = _rx(
    r"\bshow(?: me)? (?:the |a |your )?(?:report|findings|impression|summary|read)\b",
    # "what does this film show?", "do the lungs show hyperinflation?": the image shows, nobody asks where
    r"^(?!.*\bwhere\b).*\b(?:does|do|did|what) (?:[\w-]+ ){0,4}show(?:s)?\b(?! me\b)",
    # "the x-ray show pneumonia?": what the film shows, asked without "does"
    r"^(?!.*\bwhere\b).*\b(?:x-?rays?|films?|images?|cxrs?|study|studies|radiographs?|pictures?|scans?) (?:shows?|showing)\b(?! me\b)",
    r"\bwhere did\b.*\bcome from\b",  # "where did the consolidation call come from?": a reason, not a place
    r"\bfrom where (?:do |did )?you\b|\bwhere (?:do |did )?you (?:get|got|take|took|draw|drew) (?:the |that |this |your )?"
    r"(?:idea|impression|notion|conclusion)\b",
    r"\bshow (?:me )?your (?:work|reasoning|thinking|steps|logic|evidence)\b",
    r"\bwhere (?:it|they|the tip) (?:should|ought to|needs to|belongs?)\b",  # a position, not a place to show
    # "check PICC tip location": an order to check a device's position, not to show a place
    r"^(?:(?:pls|please),? )?(?:check|confirm|verify|assess|eval(?:uate)?|document)\b(?!.*\bwhere\b).*\btip location\b",
)

# "now do the same for today's film": what the previous turn asked, of another film (a whole read when it named nothing)
_SAME_AGAIN = (r"\bdo (?:the same|that|it|this)(?: again)? (?:for|on|with) (?:today'?s|this|that|the (?:new|latest|current|"
               r"next|other|second)|the) (?:(?:chest|pa|ap|portable|new) )?(?:film|study|image|x-?ray|cxr|radiograph|exam|one)\b")
_REPORT_STRONG = _rx(
    r"\breports?\b(?! (?:say|said|mention))",
    r"\bfindings (?:and|&|\+) impression\b|\bimpression\b(?! of)",
    # "your impression of this film": of the study, not "impression of cardiomegaly"
    r"\bimpression of (?:this|the|that|my) (?:(?:chest|pa|ap|portable|frontal) )?(?:film|study|image|cxr|x-?ray|"
    r"radiograph|exam|one)\b",
    r"\bdictat(?:e|ion)\b",
    r"\bwrite[- ]?up\b|\bwrite (?:it|this) up\b|\bwrite\b",
    r"\bread (?:this|the|my|it|that|these)\b|\bread this\b|\bwet read\b|\bprelim(?:inary)?\b|\bfull read\b",
    r"\bread,? (?:pls|plz|please)\b|\b(?:pls|plz|please) read\b",
    r"\b(?:portable|port|ap|pa|film|cxr|x-?ray|chest|stat|rapid) read\b",
    r"\bwalk me through (?:the |this |your )?(?:film|findings|image|x-?ray|study|read|cxr|radiograph)\b",
    r"\b(?:thoughts|comment) (?:on|about) (?:this|the|my) (?:(?:chest|portable) )?(?:film|study|image|x-?ray|cxr|"
    r"radiograph|one)\b",
    r"\b(?:overall|your|a|quick|final|formal|official) (?:read|reading|interpretation)\b",
    r"\bdraft\b",
    r"\b(?:go|run|walk)(?: me)? through (?:it|this|that|(?:the|this|my) [\w-]+)(?: [\w-]+)? systematically\b",
    r"\b(?:go|run|look) (?:through|over) (?:this|the|my|that|today'?s) (?:(?:chest|pa|ap|portable|new) )?(?:film|study|image|"
    r"x-?ray|cxr|radiograph|exam)\b",
    _EXPLAIN_IMAGE,
    r"\b(?:reprot|raport|repotr|rport|reoprt)s?\b",  # "report", misspelt
    r"\bstructured\b",
)
_REPORT_WEAK = _rx(
    r"\bfindings\b",
    r"\binterpret(?:ation)?\b",
    r"\bdescribe\b|\bdescription\b",
    r"\bsummar(?:y|ise|ize)\b",
    r"\bwhat (?:do|can) you see\b|\bwhat(?:'s| is) (?:going on|wrong|the diagnosis|your read|your impression|up with)\b",
    r"\bwhat do you (?:think|make of)\b",
    r"\bany(?:thing)? (?:abnormal(?:it(?:y|ies))?|wrong|concerning|significant|acute|remarkable|worrying|off)\b",
    r"\banything (?:that )?(?:needs?|needing|requires?|requiring) (?:action|attention|acting on)\b|\bquick look\b",
    r"\babnormal(?:it(?:y|ies))?\b",
    r"\bnormal\b|\bunremarkable\b|\bclear\b",
    r"\bnad\b|\bwnl\b|\bnothing (?:acute|bad|abnormal|wrong|significant|worrying)\b",  # "NAD?": no abnormality detected
    r"\bno acute (?:disease|abnormalit(?:y|ies)|findings?|process|change)\b|\bwithin normal limits\b",
    r"\bsign (?:this |it |the (?:film|study|cxr|x-?ray) )?off\b|\b(?:ok|okay|safe|fine) to sign\b",
    _SAME_AGAIN,
    r"\bassess(?:ment)?\b|\bevaluat(?:e|ion)\b|\breview\b|\banaly[sz]e\b|\blook at\b|\bcheck (?:this|the|it)\b",
    r"\bsum (?:it|this|that) up\b|\bdifferential\b|\bdiagnos[ie]s\b|\bddx\b",
    r"\b(?:the |both )?lungs?\b(?! (?:cancer|mass|nodule|lesion|opacity))|\b(?:left|right|lung) bases?\b|"
    r"\banything (?:in|on|at) (?:the )?(?:left|right|lung|chest|base|apex|apices)",
)
_CHAT_GENERIC = _rx(
    # a greeting alone, not one before a request ("ok what do you make of this film")
    r"^(?:hi|hello|hey|yo|good (?:morning|afternoon|evening)|thanks?|thank you|thx|ty|cheers|ok(?:ay)?|great|"
    r"cool|perfect|got it|bye|goodbye|see you)\b(?![,.!]*(?: (?:then|so|well|now|great|thanks))?[,.!]* (?:what|how|"
    r"where|which|can|could|would|will|please|pls|"
    r"now|is|are|do|does|any|show|read|give|tell|let'?s|look|check)\b)",
    r"\bwho are you\b|\bwhat (?:can|do) you do\b|\bwhat are you\b|\bhelp\b|\bhow (?:do|does) (?:this|it) work\b",
    r"^[^?]*\b(?:thanks?|thank you|thx|cheers|bye)[.! ]*$",  # "I'll discuss with my attending, thanks"
)
# What is normal in general ("what's the normal cardiothoracic ratio?"), not whether this image is normal.
_NORMS = re.compile(r"\bwhat(?:'s| is| are| does| do) (?:the|a) normal\b|\bnormal (?:size|width|range|value|diameter|"
                    r"ratio|measurements?|dimensions?) (?:of|for)\b")
# A definition or a norm asked with an explain cue: "can you explain what a PA view is?", "what's the normal
# cardiothoracic ratio?" (not a question about our reasoning, nor about this image).
_DEFINE = re.compile(r"\bexplain (?:to )?(?:me )?(?:in simple terms )?what (?!the\b|you\b|it\b|that\b|this\b)[\w\s-]{1,40} "
                     r"(?:is|are|means?)\b|\bexplain (?:to )?(?:me )?what (?:means|is|are) (?!the\b|you\b|it\b|that\b|this\b)|"
                     + _NORMS.pattern)
# Educational questions about a finding in general, not about this image.
_CHAT_DEFINITION = _rx(
    r"^(?:(?:please |pls |can you |could you )?(?:tell|explain to) me )?(?:what(?:'s| is| are) (?:a |an )?|define |"
    r"definition of |what does )(?!the\b|this\b|that\b|it\b)[\w\s-]+(?: mean)?\??$",
    r"^what(?:'s| is| are) the [\w-]+(?: [\w-]+)? signs?\??$",  # "what is the silhouette sign?": a sign's name, defined
    r"\bwhat causes\b|\bhow (?:is|are|do you) (?:it |they )?(?:treat|manage)",
    r"\b(?:usual|common|typical|main|commonest|most common|classic) (?:causes?|signs?|appearance|presentation) of\b",
    # "what are the signs of aortic dissection on CXR?": how a disease looks in general, not on this film
    r"\bwhat (?:are|is) the (?:(?:typical|classic|radiographic|x-?ray|cxr|common|usual|main) ){0,3}(?:signs?|features?) of "
    r"(?!(?:this|the|that|my|it|these|those)\b)",
    # why a disease does what it does, in general ("why does pneumonia cause consolidation?")
    r"\bwhy (?:does|do|would|can) (?!the\b|this\b|that\b|it\b|its\b|you\b|they\b|there\b|these\b|those\b|we\b|"
    r"i\b|he\b|she\b|his\b|her\b|my\b|your\b|our\b|their\b|both\b|all\b)[\w-]+(?: [\w-]+)? (?:cause|lead|"
    r"produce|result|blunt|occur|happen|develop|form|spread|obscure|make|give|create|affect|increase|decrease|resolve)",
    r"\bwhat(?:'s| is| are) the (?:usual |standard |best )?(?:treatment|management|prognosis|symptoms|risk factors|"
    r"incidence|prevalence|mortality)\b",
    r"\bdifference between\b|\bdistinguish(?:ing)? between\b|\bhow (?:do|can) you tell\b",
    # how one reads a film in general ("how do you measure the cardiothoracic ratio?"), not how we read this one
    r"\bhow (?:do|does|can|should|would) (?:you|one|i|we|radiologists?|doctors?) (?:measure|calculate|recogni[sz]e|"
    r"identify|spot|differentiate|grade|estimate)\b",
    r"\bin general\b|\btypically\b|\bdifferential (?:diagnosis )?(?:for|of)\b",
    # how often a disease occurs ("how common is pneumonia in elderly patients?"): epidemiology, not this film
    r"\bhow (?:common|rare|frequent|prevalent|likely) (?:is|are) (?!(?:it|this|that|they|there)\b)[\w-]+(?: [\w-]+)? "
    r"(?:in|among|after|with|for)\b",
    # how one reads any film ("how do I read a chest x-ray systematically?"), not a request to read this one
    r"\bhow (?:do|should|would|can|to) (?:i |you |one |we )?(?:read|interpret|review|approach|look at) (?:an? |any )"
    r"(?:(?:chest|pa|ap|portable|frontal) )?(?:x-?ray|film|cxr|radiograph|image)\b",
    _DEFINE.pattern,
)
# Anatomy-only targets for locate when no vocabulary finding is named.
_LOCATE_TARGET = re.compile(
    r"(?:where(?:'s| is| are| was| were)?|show(?: me)?|point(?: me)? (?:out|to|at)|zoom(?: in)? (?:on|to|into)|locali[sz]e|highlight|mark|circle|"
    r"outline|annotate|pinpoint|indicate|box|draw a box (?:around|on)|bounding box (?:for|around|of|on)|shade|colou?r in|"
    r"(?:put|place|drop|add|draw) (?:a |an |the )?(?:marker|pin|arrow|circle|outline|square|rectangle|frame|ring|border|dot|"
    r"shape) (?:on|round|around|over|at|to)|"
    r"location of|ground|find)\s+(?:me\s+)?(?:exactly\s+)?(?:where\s+)?(?P<target>.+)$"
)
_TRAIL = re.compile(r"(?:\s+(?:is|are|was|located|seen|please|pls|plz|on (?:the|this) (?:image|film|x-?ray|cxr)|"
                    r"(?:on|in) (?:the|this) (?:picture|pic|image|film|x-?ray|cxr|radiograph|scan)|for me|again|exactly|"
                    r"(?:that |which )?you (?:mentioned|said|described|found|flagged|saw|reported)))+\s*$")


_NOT_A_TARGET = re.compile(
    r"^(?:(?:around|round|on|over|at|for|to) )?(?:it|that|this|they|them|those|these|one|ones|there|here|i|me|we|"
    r"you|should|can|could|would|do|does|is|are|exactly|abouts?|where|all|everything)(?:\s|$)"
    r"|^(?:(?:around|round|on|over|at) )?(?:(?:the|that|this) )?(?:area|spot|region|part|thing|bit|finding|abnormality)$"
)


# "show me the classifier heatmap for cardiomegaly": the target is what follows the view words.
_VIEW_WORDS = re.compile(
    r"^(?:the\s+)?(?:classifier\s+|gradient\s+)?(?:heat ?map|saliency(?: map)?|grad-?cam|overlay|box(?:es)?)"
    r"(?:\s+(?:for|of|on|around|showing))?(?:\s+the)?\s*"
)


def _locate_phrase(t: str) -> str | None:
    """The free-text target of a locate request: 'where is the left lower lobe opacity?' -> that phrase."""
    s = re.sub(r"[?.!,;:]+", " ", t).strip()
    m = _LOCATE_TARGET.search(s)
    if not m:
        return None
    target = m.group("target").strip()
    target = _TRAIL.sub("", f" {target}").strip()  # "show it on the image": the trailing place first
    target = re.sub(r"^(?:is|are|was|were|the|a|an|that|this|those|these|it|its|exactly)\s+", "", target)
    target = re.sub(r"^(?:the|a|an|that|this|those|these)\s+", "", target)
    target = _TRAIL.sub("", target).strip()
    target = _VIEW_WORDS.sub("", target).strip()
    if not target or _NOT_A_TARGET.match(target):
        return None  # "where is it?", "where should I look": follow_up names the previous turn's finding
    return target


# A clarifying question's "general answer" choice starts with this (agents/replying/clarify.py).
GENERAL_PREFIX = "General question, not about this image:"
_GENERAL = GENERAL_PREFIX.lower()


_NEXT_QUESTION = re.compile(r"\?(?=.*\S)|,?\s+(?:and|or|then)\s+(?:(?:also )?(?:tell|show) me )?"
                            r"(?=(?:is|are|where|which|what|how|any|does|do|has|have)\b)")


def first_question(t: str) -> tuple[str, str, str]:
    """(the first question, what joins the next, the rest), as str.partition: split at a "?" inside the turn, or
    where ", and"/", or" joins a second question; (t, "", "") when there is one question."""
    m = _NEXT_QUESTION.search(t.rstrip("?"))
    return (t[: m.start()], m.group(), t[m.end() :]) if m else (t, "", "")


def _classify(t: str, findings: list[str], *, has_history: bool) -> tuple[str, str]:
    """(intent, reason) for the cleaned turn ``t``; the rule order is the routing policy."""
    named = ", ".join(display_name(f).lower() for f in findings)
    if t.startswith(_GENERAL):
        return "chat", "the user asked for a general answer, not a reading of the image"
    # "pneumonia? if so, which lobe?": the first question asks whether, the later one where
    # ... and "is there a pneumothorax, and where is the chest tube?": a question, then another joined to it
    first, joined, _ = first_question(t)
    later_locate = bool(joined) and bool(findings) and not _LOCATE.search(first) \
        and bool(extract_findings(first))
    locate_cue = bool(_LOCATE.search(t)) and not _LOCATE_EXCLUDE.search(t) and not later_locate
    explain_cue = (bool(_EXPLAIN.search(t)) or (has_history and bool(_EXPLAIN_SOFT.search(t)))
                   or (bool(_EXPLAIN_REF.search(t)) and not locate_cue))
    if explain_cue and not _EXPLAIN_EXCLUDE.search(t) and not _CHAT_DEFINITION.search(t):
        if has_history or findings or not _SIMILAR.search(t):
            return "explain", "asks why/how a conclusion was reached: answer from this thread's evidence"
    if _SIMILAR.search(t):
        return "similar_cases", "asks for similar prior cases: search the report index"
    if locate_cue:
        return "locate", f"asks where {named or 'a region'} is: ground it with the VLM and classifier heatmap"
    if _COMPARISON.search(t) and not findings and not _REPORT_STRONG.search(t):
        return "report", "asks what changed since an earlier study, naming no finding: the current study is read in full"
    if _CHAT_GENERIC.search(t) and not findings and not _REPORT_STRONG.search(t):
        return "chat", "conversational turn with no clinical target"
    if findings and _CHAT_DEFINITION.search(t):
        return "chat", f"general question about {named}, not about this image"
    if _NORMS.search(t) and not _REPORT_STRONG.search(t):
        return "chat", "asks what is normal in general, not about this image"
    if _REPORT_STRONG.search(t):
        return "report", "asks for a read of the whole study: full report with all tools"
    if findings:
        return "finding_question", f"asks about {named}: targeted VLM question + classifier score"
    if _REPORT_WEAK.search(t) or is_survey(t):
        return "report", "asks what the study shows overall: full read with all tools"
    return "chat", "no report, finding, location, similar-case or explanation cue: free chat"


# A question about change over time ("is it worse than before?", "any interval change?"). The tools read one
# study at a time, so the reply says no earlier film was compared (agents/replying/compose.py).
_COMPARISON = re.compile(
    r"\b(?:worse|worsen\w*|improv\w*|progress(?:ed|ing|ion)?|resolv(?:ed|ing)|regress\w*|unchanged|grown|shrunk(?:en)?)\b"
    r"|\bcom(?:par|pra|pair|apr)(?:e|ed|d|ing|ison)\b.*\b(?:prior|previous|last|earlier|old|before|yesterday)\b"  # "compard"
    r"|\b(?:than|since|from) (?:before|yesterday|last (?:time|week|month|year|film|study|x-?ray|exam)|"
    r"the (?:prior|previous|last|earlier|old)\b)"
    r"|\binterval (?:change|increase|decrease|development|improvement)\b|\bany (?:interval )?changes?\b"
    r"|\b(?:new|changed?) since\b|\b(?:is|are) (?:it|this|that|they|the \w+(?: \w+)?) (?:still )?stable\b"
    # "is it any better?", "looking better": better about the patient, not "explain it better"
    r"|\b(?:(?:is|are|was|were|looks?|looking|getting|gotten|got) (?:it |this |that |they |things |he |she )?"
    r"(?:any |much |a bit |slightly |somewhat )?better|any better)\b"
    # "compare the two studies", "did anything change between the two films", "differences between both images"
    r"|\b(?:compar\w*|chang\w*|differ\w*)\b.*\b(?:(?:the|these|those) (?:two|2)|both)(?: \w+)? "
    r"(?:studies|films|images|x-?rays|exams|radiographs|scans|cxrs)\b"
    # "now vs the earlier study", "against the baseline film"
    r"|\b(?:vs\.?|versus|against|relative to)\s+(?:the |my |his |her |their )?(?:prior|previous|last|earlier|older|"
    r"old|first|baseline|original)\b"
)


_SIDE = re.compile(r"\b(?:(right|left)(?:[- ]?sided)?|(bilateral(?:ly)?|both sides|both lungs))\b")


def asked_side(text: str) -> str | None:
    """The side a turn asks about ("right", "left", "bilateral"), or None; right and left together: bilateral."""
    found = {("bilateral" if m.group(2) else m.group(1)) for m in _SIDE.finditer(_clean(text or ""))}
    if not found:
        return None
    return "bilateral" if "bilateral" in found or found == {"right", "left"} else found.pop()


# What a yes/no answer does not settle: how large or severe a finding is, or whether a device sits right.
_SIZE = re.compile(r"\b(?:how (?:big|large|severe|bad|extensive|much)|size|sized|severity|severe|large|small|tiny|"
                   r"bigger|larger|smaller|"
                   r"massive|moderate|mild|trace|grade|extent)\b")
_POSITION = re.compile(r"\b(?:position(?:ed|ing)?|placement|placed|malposition\w*|tip|depth|too (?:high|low|deep|far)|"
                       r"where (?:it|they|the tip) (?:should|ought to|needs to) (?:be|go|sit|lie)|"
                       r"in (?:the )?(?:right|correct|good|proper|satisfactory) (?:place|spot))\b")


_RULE_OUT = re.compile(r"\b(?:rule[sd]? (?:it |this |that )?out|ruling out|r/o|exclude[sd]?|excluding)\b")


def asked_aspect(text: str) -> str | None:
    """``"rule_out"`` for a request to exclude a finding, ``"position"`` for where a device sits, ``"size"`` for
    how large or severe, else None."""
    t = _clean(text or "")
    if _RULE_OUT.search(t):
        return "rule_out"
    return "position" if _POSITION.search(t) else "size" if _SIZE.search(t) else None


def asks_comparison(text: str) -> bool:
    """Whether the turn asks how the image compares with an earlier one."""
    return bool(_COMPARISON.search(_clean(text or "")))


_BACK_REFERENCE = re.compile(r"\b(?:it|its|that|this|they|them|those|these|one|ones)\b")
# An elliptical follow-up adds only a side, a size, a place or a change to the previous question:
# "where?", "and on the left?", "how big?", "worse than before?", "same on the right".
_ELLIPSIS = re.compile(
    r"^(?:(?:and|so|ok|also|now|what about|how about|same(?: question)?(?: for)?|can you|could you|please|pls|"
    r"roughly|approx(?:imately)?|about|just)\b,? ?)*"
    r"(?:the )?"
    r"(?:where(?: exactly)?|(?:in |on )?which (?:side|lobe|zone|ribs?|part|parts|area|level|segment)|"
    r"(?:upper|lower|mid) or (?:upper|lower|mid)|show(?: me)?(?: where)?|box|mark|highlight|"
    r"(?:any )?(?:others?|other ones?|more of them|another(?: one)?)|"
    r"(?:on |in )?(?:the )?(?:right|left|both sides|bilateral(?:ly)?|other|opposite|contralateral)"
    r"(?: side| lung| base| one)?|"
    r"(?:at |in |on )?(?:the )?(?:(?:right|left) )?(?:apex|apices|bases?|(?:upper|lower|mid(?:dle)?) (?:lobe|zone))|"
    r"(?:how|what) (?:big|large|bad|severe|much|extensive|many|size|enlarged|wide|thick|far|deep|low|high)|size|"
    r"(?:is it |it's |it is )?still (?:there|present|visible|seen)|too (?:deep|high|low|far|shallow|proximal|distal)|"
    r"(?:mild|moderate|severe|small|large|tiny|massive|trace)(?: or (?:mild|moderate|severe|small|large|massive))?|worse|better|(?:any )?change|bigger|smaller|"
    r"more|less|com(?:par|pra|pair|apr)(?:e|ed|d)(?: with| to)? (?:the )?(?:prior|previous|last|old|earlier|before|yesterday)|"
    r"(?:now|today|this time|on this (?:one|film|x-?ray))(?=[?.! ]*$)|"  # "and now?": the same question of this film
    # two readings to choose between: "lobar or patchy?", "smooth or spiculated margins?", "apex only or the whole side?"
    r"[\w-]+(?: [\w-]+)? or (?:the |a |an )?[\w-]+|"
    # a quality of what was asked: "loculated or free-flowing?", "acute or old?"
    r"(?:loculated|free[- ]?flowing|acute|chronic|old|healed|healing|displaced|tension|simple|complex)(?: or [\w-]+)?)\b[\w ,/-]{0,30}"
    r"[?.!]*$")


# "cases with that", "reports showing the same": what the previous question asked about
_SIMILAR_REF = re.compile(r"\b(?:with|showing|having|of|like) (?:it|that|those|them|the same(?: finding| findings| thing)?)"
                          r"(?:\?|$|\s(?!one\b|image|film|study|x-?ray|appearance|pattern))")


# "is it calcified or not?": a yes/no question about what the previous question named
_ASKS_OF_IT = re.compile(r"^(?:(?:and|so|ok|but),? )?(?:is|are|was|were|does|do|did|has|have|could|can|would|should) "
                         r"(?:it|they|that|this|those|these|the lesion|the finding)\b")


def follow_up(route: Route | Mapping[str, Any], text: str, previous: list[str]) -> Route:
    """'Is there an effusion?' then 'Where is it?' or 'and on the left?': a locate or finding question that
    names no target of its own, with a back-reference or nothing but a side/size/place/change, is about the
    finding(s) the previous turn asked about (``previous``)."""
    route = as_route(route) or Route(intent="chat")
    t = _clean(text or "")
    if not previous or route.phrase or route.region:
        return route
    if (route.finding or route.findings) and not occasion_only(t):
        return route  # "any change since the drain went in?" names the drain only as the occasion
    intent = route.intent
    ellipsis = _ELLIPSIS.search(t) if len(t.split()) <= 9 else None
    asks_of_it = _ASKS_OF_IT.search(t) is not None and not _COMPARISON.search(t)
    change = _COMPARISON.search(t) is not None
    same = re.search(_SAME_AGAIN, t)
    if (ellipsis or same or (intent == "chat" and asks_of_it)
            or (intent == "report" and change and _BACK_REFERENCE.search(t))) \
            and (intent == "chat" or (intent == "report" and not _REPORT_STRONG.search(t))):
        # "and on the left?", "how extensive?": alone they read as chat or a whole read; they continue the previous
        # question. So does a change that refers back or is elliptical ("is it any better?", "worse than yesterday?"
        # after "is there an effusion?" ask what "is the effusion any better?" asks); one that names the studies
        # ("any interval change?", "compare the two films") stays a whole-study comparison.
        intent = "finding_question"
    if intent == "similar_cases":
        m = _SIMILAR_REF.search(t)  # "similar cases with that?": the previous question's finding
    elif intent not in {"locate", "finding_question"}:
        return route
    else:
        # "show me", "put a box around it": a request to locate that names nothing is about the previous finding
        m = _BACK_REFERENCE.search(t) or ellipsis or same or (re.search(r"\S+", t) if intent == "locate" else None)
    if m is None:
        return route
    named = ", ".join(display_name(f).lower() for f in previous)
    return route.model_copy(update={
        "intent": intent, "finding": previous[0], "findings": list(dict.fromkeys([*previous, *route.findings])),
        "reason": f"{route.reason}; '{m.group(0).strip()}' = {named}, from the previous question"})


_MAX_CHARS = 4000  # a pasted document is routed on its first 4,000 characters (~25 ms worst case)


def route(text: str, *, has_image: bool, has_history: bool = False) -> Route:
    """Route one turn by rules (no model, no I/O). See the module docstring for the rule order."""
    t = clean_cut(text or "", _MAX_CHARS)
    if not t:
        intent, reason, findings = "chat", "empty turn", []
    else:
        findings = extract_findings(t)
        intent, reason = _classify(t, findings, has_history=has_history)
        if intent == "explain" and not findings:
            # "why did you say it's normal?" names no_finding only in an explanation.
            findings = [f for f in extract_findings(t, allow_no_finding=True) if f == "no_finding"]
        if intent == "locate":
            regions = find_regions(t)
            if regions:
                # "where is the cardiac silhouette": the region's words name no finding here
                findings = extract_findings(t, exclude=tuple((r.start, r.end) for r in regions))
                if not findings:
                    reason = (f"asks where the {display_name(regions[0].finding).lower()} is: an anatomical "
                              "region, grounded by the VLM (a location, not a finding)")
                return _make_route(intent, findings, t, reason, has_image=has_image, method="rules",
                                   region=regions[0].finding)
    return _make_route(intent, findings, t, reason, has_image=has_image, method="rules")


def _make_route(intent: str, findings: list[str], t: str, reason: str, *, has_image: bool,
                method: Literal["rules", "llm"], phrase: str | None = None, region: str | None = None) -> Route:
    if intent == "locate" and region is None and phrase:
        region = normalize_region(phrase)
    if intent == "locate" and phrase is None:
        phrase = _locate_phrase(t)
        if region is not None and not findings and (phrase is None or normalize_region(phrase) != region):
            phrase = REGIONS[region]  # "... cardiac silhouette located in this x-ray" -> the region's trained name
    if intent in ("report", "similar_cases") and findings:
        # a request for the whole read or for similar cases that names a structure ("report, incl. the
        # mediastinum", "reports with a similar heart") asks about none
        bare = set(findings) - set(extract_findings(t, structures=False))
        findings = [f for f in findings if f not in bare]
    needs_image = intent in IMAGE_INTENTS and not has_image
    if needs_image:
        reason = f"{reason} (no image yet: ask for one)"
    return Route(
        intent=intent,  # type: ignore[arg-type]
        # a general question ("what causes a pneumothorax?") names a finding but asks about none on the image
        finding=findings[0] if findings and intent != "chat" else None,
        findings=findings,
        phrase=phrase if intent == "locate" else None,
        region=region if intent == "locate" else None,
        needs_image=needs_image,
        reason=reason,
        method=method,
    )
