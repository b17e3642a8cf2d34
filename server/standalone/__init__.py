"""The production graph server: the served graph, our routes and our auth on Postgres, with no licence key.

A small LangGraph-SDK-compatible HTTP server (the endpoints ``langgraph_sdk``, ``RemoteGraph`` and the
remote UI call) over the same ``graph.py`` graph, ``server/app.py`` routes and ``server/auth.py``
rules. Threads, runs and the run queue are rows in Postgres (``threads.py``, ``run_rows.py``),
checkpoints are LangGraph's Postgres saver, and every server process on the database claims turns from
the queue, ``jobs`` at once, one at a time per thread (``runs.py``). ``python -m server.standalone``
(``deploy/serve_prod.sh``) starts it.
"""
