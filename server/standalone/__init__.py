"""The production graph server: the served graph, our routes and our auth on Postgres, with no licence key.

A small LangGraph-SDK-compatible HTTP server (the endpoints ``langgraph_sdk``, ``RemoteGraph`` and the
remote UI call) over the same ``graph.py`` graph, ``server/app.py`` routes and ``server/auth.py``
rules. Threads and runs are rows in Postgres (``threads.py``), checkpoints are LangGraph's Postgres
saver, and turns run on a bounded pool, one at a time per thread (``runs.py``). ``python -m
server.standalone`` (``deploy/serve_prod.sh``) starts it.
"""
