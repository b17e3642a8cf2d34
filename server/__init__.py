"""HTTP routes mounted in a LangGraph Server beside the served graph (langgraph.json ``http.app``).

Floor 5 (beside ``ui``): imports ``tools`` and ``cxr_agent`` only; the graph itself is served by
LangGraph Server from ``graph.py``.
"""
