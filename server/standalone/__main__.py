"""``python -m server.standalone --host 127.0.0.1 --port 2024 --jobs 4``: the production graph server."""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server.standalone", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2024)
    parser.add_argument("--jobs", type=int, default=4, help="turns run at once (worker threads)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive whole number (got {args.jobs})")
    import uvicorn

    from server.standalone.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # our routes' in-process calls name thread ids
    uvicorn.run(create_app(args.jobs), host=args.host, port=args.port, log_level="info",
                access_log=False, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
