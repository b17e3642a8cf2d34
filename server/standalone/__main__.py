"""``python -m server.standalone --host 127.0.0.1 --port 2024 --jobs 4 [--workers 2]``: the production graph server."""

from __future__ import annotations

import argparse
import json
import logging
import os

_ARGS = "CXR_STANDALONE_APP_ARGS"  # jobs and lease, handed to each worker process uvicorn starts


def app_from_environment() -> object:
    """The app for one of ``--workers`` processes (uvicorn imports it by name in each)."""
    from server.standalone.app import create_app

    args = json.loads(os.environ[_ARGS])
    return create_app(int(args["jobs"]), float(args["lease_s"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server.standalone", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2024)
    parser.add_argument("--jobs", type=int, default=4, help="turns each process runs at once (worker threads)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes on this port; they share the run queue in Postgres (each loads the models)")
    parser.add_argument("--run-lease-s", type=float, default=60.0,
                        help="a run whose process has not renewed it for this long (it died) is ended as an error")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive whole number (got {args.jobs})")
    if args.workers < 1:
        parser.error(f"--workers must be a positive whole number (got {args.workers})")
    if not 3 <= args.run_lease_s <= 3600:
        parser.error(f"--run-lease-s must be 3-3600 seconds (got {args.run_lease_s:g})")
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # our routes' in-process calls name thread ids
    os.environ[_ARGS] = json.dumps({"jobs": args.jobs, "lease_s": args.run_lease_s})
    uvicorn.run("server.standalone.__main__:app_from_environment", factory=True, workers=args.workers,
                host=args.host, port=args.port, log_level="info", access_log=False, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
