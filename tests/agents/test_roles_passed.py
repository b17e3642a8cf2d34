"""The graph's one ToolRoles is what every reader of its tools uses: the runner's chains, the runtime and
the multiple-choice answerer take the roles they are given, never re-reading the capability flags."""

from __future__ import annotations

from graph_scripted import ScriptedTool, ScriptedVLM, classifier
from mcq_tools import Tool

from agents.replying.roles import ToolRoles
from agents.turn.multiple_choice import MultipleChoice, MultipleChoiceQuestion
from agents.turn.tool_runner import plan_chains
from knowledge.evidence import Evidence


def test_plan_chains_follows_the_roles_it_is_given():
    roles = ToolRoles(writers=("scribe",), scorers=("densenet",), drafted=("atlas",))
    names = ["densenet", "scribe", "atlas"]
    assert plan_chains("report", roles, names) == [["scribe", "atlas"], ["densenet"]]
    assert plan_chains("finding_question", roles, names) == [["densenet"], ["scribe"], ["atlas"]]
    # the same tools with no writer among the roles: nothing to wait for, each runs alone
    assert plan_chains("report", ToolRoles(drafted=("atlas",)), names) == [["densenet"], ["scribe"], ["atlas"]]


def test_the_runtime_exposes_the_roles_the_nodes_read(make_graph):
    from graph import runtime

    atlas = ScriptedTool("atlas", {"report", "similar_cases"}, Evidence(tool="atlas"), image_source=False)
    atlas.needs_draft = True
    g = make_graph(ScriptedVLM(), classifier({"cardiomegaly": 0.8}), atlas)
    roles = runtime(g).roles
    assert (roles.writers, roles.scorers, roles.drafted, roles.verifiers) == (("vlm",), ("classifier",), ("atlas",),
                                                                             ("vlm",))
    assert roles.neighbours == ("atlas",) and roles.prior_sources == frozenset({"atlas"})


def test_the_multiple_choice_answerer_asks_by_the_roles_it_is_given():
    import numpy as np

    from tools.ingestion.study import Study

    study = Study.from_array(np.zeros((32, 32), dtype=np.float32), view="PA")
    q = MultipleChoiceQuestion(question="Which?", options={"A": "Cardiomegaly", "B": "Pneumothorax"},
                               images=["x.png"])
    read_by_flags = Tool("densenet", {"cardiomegaly": 0.9})  # declares image_source
    MultipleChoice({"densenet": read_by_flags}, lambda _p: study).answer(q, thread_id="a")
    assert [r.intent for r in read_by_flags.requests] == ["finding_question"]
    # the graph's roles say it is a prior (it does not read the image): it is not asked about the image
    as_prior = Tool("densenet", {"cardiomegaly": 0.9})
    mc = MultipleChoice({"densenet": as_prior}, lambda _p: study, roles=ToolRoles(priors=("densenet",)))
    answer = mc.answer(q, thread_id="b")
    assert as_prior.requests == [] and answer.tools_called == {}
    assert mc.policy.prior_sources == frozenset({"densenet"})
