"""A scripted graph on its own checkpointer, for forgetting and retention tests that need the saver the graph
wrote to (its checkpoints say which studies a conversation has used)."""

from __future__ import annotations

from graph_scripted import ScriptedVLM, classifier

from agents.memory.checkpointers import make_checkpointer


def checkpointed_graph(make_graph, settings):
    """The graph (a VLM reporting cardiomegaly, a classifier agreeing) and the in-process saver it checkpoints to."""
    saver = make_checkpointer(settings.model_copy(update={"checkpointer_url": None}))
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85}), checkpointer=saver)
    return g, saver


def ask(g, thread: str, text: str, study_id: str | None = None) -> dict:
    """One user turn in `thread`, on `study_id` when given (else on the thread's current study)."""
    inputs: dict = {"messages": [("user", text)]}
    if study_id is not None:
        inputs["study_id"] = study_id
    return g.invoke(inputs, {"configurable": {"thread_id": thread}})
