"""What a turn no longer recomputes keeps its meaning: the policy's hash, the labeler's calls and
keyword index, the turn record's reasons for a change, the audit file's path."""

from __future__ import annotations

import pickle

from agents.memory import audit_log
from agents.reconciling.policy import Policy
from agents.turn.record import DecisionChange, build_record, payload_extras
from knowledge import labeler
from knowledge.evidence import Decision, Evidence, FindingCall, Status
from knowledge.lexicon import lexicon


def test_policy_hash_is_computed_once_and_never_pickled():
    p = Policy(source_weights={"vlm": 1.0, "classifier": 1.0})
    assert hash(p) == hash(Policy()) and p == Policy()
    assert hash(Policy(margin_high=0.3)) != hash(p)
    assert vars(p)["_hash"] == hash(p)  # kept: the decision memo hashes the policy on every lookup
    back = pickle.loads(pickle.dumps(p))  # another process hashes strings differently: recomputed there
    assert "_hash" not in vars(back) and back == p and hash(back) == hash(p)


def test_labelled_calls_equal_validated_ones_with_the_same_fields_set():
    report = "Heart size is normal. No pleural effusion. Possible small left basilar atelectasis."
    calls = labeler.label_report(report, source="vlm", task="report")
    assert {c.finding for c in calls} == {"no_finding", "atelectasis", "cardiomegaly", "pleural_effusion"}
    for c in calls:
        validated = FindingCall.model_validate(c.model_dump(exclude_unset=True))
        assert c == validated and c.model_dump() == validated.model_dump()
        assert c.model_fields_set == validated.model_fields_set
        assert list(c.model_dump()) == list(FindingCall.model_fields)  # declared order: same checkpoint bytes
    atelectasis = next(c for c in calls if c.finding == "atelectasis")
    assert atelectasis.status is Status.uncertain and report[slice(*atelectasis.span)] == atelectasis.text
    assert atelectasis.model_copy(update={"text": "x"}).text == "x" and atelectasis.text != "x"


def test_keyword_index_lets_exactly_the_rules_with_a_keyword_in_the_sentence_run():
    sentences = ["stable 5 mm nodule in the right upper lobe.", "heart size is normal.", "no acute process.",
                 "the lungs are clear without pleural effusion or pneumothorax.", "xxxx."]
    sentences += [n.pattern.replace("\\", "")[:40].lower() for n in lexicon().normal_statements]
    for s in sentences:
        expected = [r for r in labeler._RULES if any(k in s for k in r.keywords)]
        indexed = [labeler._RULES[i] for i in sorted({i for k, rules in labeler._KEYWORDS.items()
                                                      if k in s for i in rules})]
        assert indexed == expected, s
        assert labeler._label_sentences([s]) == labeler._label_sentences([s], prefilter=False), s


def test_record_says_which_outputs_bear_on_each_changed_decision():
    def call(finding: str, source: str, status: Status = Status.present) -> FindingCall:
        return FindingCall(finding=finding, status=status, source=source)

    evidence = [
        Evidence(tool="vlm", calls=[call("nodule", "vlm"), call("edema", "vlm")], meta={"ask": {"kind": "report"}}),
        Evidence(tool="classifier", calls=[call("nodule", "classifier")], meta={"ask": {"kind": "image"}}),
        Evidence(tool="classifier", calls=[call("edema", "classifier")], meta={"reused": True}),
        Evidence(tool="vlm", calls=[call("nodule", "vlm", Status.absent)], meta={"verification": "nodule"}),
        Evidence.failure("retrieval", "down"),
    ]
    after = [Decision(finding=f, status=Status.present, confidence=0.8) for f in ("nodule", "edema", "mass")]
    before = [Decision(finding="edema", status=Status.absent, confidence=0.7),
              Decision(finding="mass", status=Status.present, confidence=0.8)]
    record = build_record({"intent": "report"}, evidence, after, before, "reply", study_id="s")
    assert {c.finding: c.because for c in record.changed} == {
        "nodule": ["vlm (report)", "classifier (image)", "vlm re-ask"], "edema": ["vlm (report)"]}
    assert payload_extras(record)["changed"] == [c.model_dump(mode="json") for c in record.changed]


def test_changed_decisions_in_the_payload_are_their_json_dump():
    assert set(DecisionChange.model_fields) == {"finding", "before", "after", "confidence_before", "confidence_after",
                                                "review_before", "review_after", "because"}  # a new field: dump it
    record = build_record({"intent": "report"}, [], [], [], "reply", study_id="s")
    for c in (DecisionChange(finding="edema", after=Status.present, confidence_after=0.8, review_after=False),
              DecisionChange(finding="mass", before=Status.absent, after=Status.uncertain, confidence_before=0.7,
                             confidence_after=0.5, review_before=False, review_after=True, because=["vlm (report)"])):
        record.changed = [c]
        extras = payload_extras(record)["changed"]
        assert extras == [c.model_dump(mode="json")] and list(extras[0]) == list(c.model_dump(mode="json"))


def test_audit_lines_of_two_data_dirs_go_to_their_own_folders(tmp_path):
    from cxr_agent.settings import Settings

    for name in ("a", "b"):
        settings = Settings(model_profile="tiny", offline=True, data_dir=tmp_path / name, audit_log=True)
        for _ in range(2):
            path = audit_log.append(settings, audit_log.reply_record(settings, thread_id=name, study_id=None,
                                                                     intent="chat"))
            assert path == tmp_path / name / "audit" / path.name
        assert len(path.read_text().splitlines()) == 2
        assert (path.parent.stat().st_mode & 0o777) == 0o700 and (path.stat().st_mode & 0o777) == 0o600


def test_record_keeps_the_route_typed_and_reads_it_back_from_json():
    from agents.routing.rules import Route
    from agents.turn.record import TurnRecord

    route = Route(intent="locate", finding="nodule", findings=["nodule"], side="left", scores={"locate": 0.9})
    record = build_record(route, [], [], [], "reply", study_id="s")
    assert record.route is route  # the router's own value: not dumped and validated again
    assert build_record(route.model_dump(), [], [], [], "reply", study_id="s").route == route  # an older dict
    back = TurnRecord.model_validate_json(record.model_dump_json())  # how a served turn reaches the UI
    assert isinstance(back.route, Route) and back.route == route
    assert TurnRecord().route == Route(intent="chat")


def test_clarifying_words_read_the_typed_clarify_as_its_fields():
    from agents.replying import clarify as words
    from agents.routing.rules import Clarify, Reading

    typed = Clarify(about="finding", readings=[Reading(intent="finding_question", finding="edema", score=0.6),
                                               Reading(intent="finding_question", phrase="edemaa", score=0.3)])
    assert words.question(typed, "edemaa?") == words.question(typed.model_dump(), "edemaa?")
    assert words.choices(typed) == words.choices(typed.model_dump()) == [
        {"label": "whether there is edema", "message": "Is there edema?"},
        {"label": "whether there is 'edemaa', in your words (not a finding the tools know by name)",
         "message": "Is there 'edemaa'?"}]
    assert "which finding you mean" in words.question(typed) and "not a finding the tools know" in words.question(typed)
