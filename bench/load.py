"""Many clinicians at once against the served graph: `langgraph dev` (or the production server on Postgres,
``--database-url``) with N jobs, tiny models.

`make bench-load` (or `python -m bench.load --users 8 --turns 5 --rounds 4 --jobs 4`). Each round, every
user opens a new conversation on their own study and asks ``turns`` questions in turn (a report, a
finding question, a follow-up "where is it?", an explanation, similar cases), all users at once; a ninth
client sends a malformed upload and an over-long message each round. Reported: p50/p95 wall time per turn
type, errors (anything but a reply or the expected refusals), cross-talk (a reply naming another user's
study, or a thread holding turns it was not sent), how many turns the server ran at once, and its resident
memory after each round: by default each round's conversations are deleted at its end (as forget and
retention would), so growth from round to round is memory the server keeps for nothing; ``--keep`` holds
them all and deletes them at the end instead. The memory row: the slope of resident memory (least squares,
MiB per round) over the second half of the rounds, after warm-up, against ``<= 1 MiB/round`` (the exit status
is 1 when it is missed, as for an error); run enough rounds to see it (``--rounds 40``: the production
server's C heap fills over its first dozen rounds before it stays flat). The server runs
with two malloc arenas, as deploy/serve_prod.sh and deploy/serve_graph.sh start it. Not part of `make bench`:
it starts a server and runs for minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ("Write a report", "Is there cardiomegaly?", "Where is it?", "Explain that", "Show similar cases")
SHARED = (os.environ.get("CXR_AGENT_SHARED_DATA"), REPO.parent / "shared" / "data", Path("/work/shared/data"))
SLOPE_TARGET = 1.0
"""Resident MiB per round the server may still gain after warm-up: flat, within the noise of one round."""
MIN_SLOPE_ROUNDS = 3
"""Rounds after warm-up needed before a slope means anything."""


def _images(n: int) -> list[Path]:
    for root in SHARED:
        found = sorted(Path(root, "nih_cxr14", "images").glob("*.png")) if root else []
        if len(found) >= n:
            return found[:n]
    raise SystemExit(f"need {n} NIH images under <shared>/data/nih_cxr14/images (set CXR_AGENT_SHARED_DATA)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _corpus(work: Path) -> Path:
    import csv

    from tools.retrieval.corpus import iu_xray_reports

    corpus = work / "priors.csv"
    with corpus.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for r in iu_xray_reports(limit=80):
            w.writerow([r.id, r.text])
    return corpus


def _server_env(work: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXR_AGENT_DATA_DIR": str(work / "data"),
           "CXR_AGENT_MODEL_PROFILE": "tiny", "CXR_AGENT_OFFLINE": "1", "CXR_AGENT_CORPUS": str(_corpus(work)),
           "CXR_AGENT_INDEX_DIR": str(work / "index"), "CXR_AGENT_VLM_MAX_NEW_TOKENS": "24",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LANGGRAPH_CLI_NO_ANALYTICS": "1",
           "LANGSMITH_TRACING": "false", "CXR_AGENT_SERVER_AUTH_DISABLED": "true",
           "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}  # as the deploy scripts run it
    for key in ("CXR_AGENT_SERVER_TOKEN", "CXR_AGENT_SERVER_USERS", "CXR_AGENT_GRAPH_URL", "CXR_AGENT_CHECKPOINTER_URL"):
        env.pop(key, None)
    return env


def dev_command(work: Path, port: int, jobs: int) -> list[str]:
    """`langgraph dev` serving this checkout's langgraph.json from ``work``."""
    config = json.loads((REPO / "langgraph.json").read_text())

    def absolute(spec: str) -> str:
        path, _, attr = spec.partition(":")
        return f"{(REPO / path).resolve()}:{attr}"

    config["dependencies"] = [str((REPO / d).resolve()) for d in config["dependencies"]]
    config["graphs"] = {k: absolute(v) for k, v in config["graphs"].items()}
    config["http"]["app"] = absolute(config["http"]["app"])
    config["auth"]["path"] = absolute(config["auth"]["path"])
    (work / "langgraph.json").write_text(json.dumps(config))
    cli = Path(sys.executable).with_name("langgraph")
    return [str(cli), "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser",
            "--no-reload", "--n-jobs-per-worker", str(jobs), "--config", str(work / "langgraph.json")]


@contextmanager
def served(work: Path, jobs: int, database_url: str | None = None) -> Iterator[tuple[str, int]]:
    """The graph server on 127.0.0.1 from ``work``: `langgraph dev`, or the production server
    (server/standalone) when ``database_url`` names its Postgres database; (url, process group)."""
    port = _free_port()
    env = _server_env(work)
    if database_url:
        env["CXR_AGENT_CHECKPOINTER_URL"] = database_url
        command = [sys.executable, "-m", "server.standalone", "--host", "127.0.0.1", "--port", str(port),
                   "--jobs", str(jobs)]
    else:
        command = dev_command(work, port, jobs)
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{(work / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _group_status(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` number summed over the server's process group (the CLI and the server it runs)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError, ValueError):
            continue
    return total


def rss_mib(pid: int) -> float:
    """Resident memory of the server's process group, MiB."""
    return _group_status(pid, "VmRSS") / 1024


def thread_count(pid: int) -> int:
    """OS threads of the server's process group: each new one brings a stack and, where it runs torch, an
    OpenMP team and a malloc arena of its own, so resident memory steps up with it until every pool is full."""
    return _group_status(pid, "Threads")


class Tally:
    """Turn times by intent, errors, cross-talk, and how many turns were in flight at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.cross_talk: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.studies: set[str] = set()  # every user's study this round

    def start(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def end(self, intent: str | None, seconds: float) -> None:
        with self.lock:
            self.in_flight -= 1
            if intent:
                self.times[intent].append(seconds)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)

    def crossed(self, what: str) -> None:
        with self.lock:
            self.cross_talk.append(what)


def one_user(url: str, user: int, study_id: str, turns: int, tally: Tally) -> str | None:
    """One clinician's conversation; returns its thread id."""
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=url, api_key=None, timeout=httpx.Timeout(600.0, connect=10.0))
    try:
        thread = client.threads.create()["thread_id"]
    except Exception as exc:  # noqa: BLE001 - counted, the round goes on
        tally.error(f"user {user}: thread create {type(exc).__name__}")
        return None
    for n in range(turns):
        payload: dict[str, Any] = {"messages": [{"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]}]}
        if n == 0:
            payload["study_id"] = study_id
        intent, reply = None, None
        tally.start()
        t0 = time.perf_counter()
        try:
            for chunk in client.runs.stream(thread, "cxr_agent", input=payload, stream_mode=["custom"]):
                if chunk.event == "error":
                    tally.error(f"user {user} turn {n}: {str(chunk.data)[:120]}")
                elif chunk.event == "custom" and isinstance(chunk.data, dict):
                    if chunk.data.get("event") == "route":
                        intent = chunk.data.get("intent")
                    elif chunk.data.get("event") == "reply":
                        reply = chunk.data
        except Exception as exc:  # noqa: BLE001
            tally.error(f"user {user} turn {n}: {type(exc).__name__}")
        tally.end(intent if reply is not None else None, time.perf_counter() - t0)
        if reply is None:
            tally.error(f"user {user} turn {n}: no reply")
    try:
        values = client.threads.get_state(thread)["values"]
    except Exception as exc:  # noqa: BLE001
        tally.error(f"user {user}: state {type(exc).__name__}")
        return thread
    if values.get("study_id") in tally.studies - {study_id}:
        tally.crossed(f"user {user}: thread holds another user's study")
    elif values.get("study_id") != study_id:
        tally.error(f"user {user}: thread lost its study")
    messages = values.get("messages") or []
    if len(messages) != 2 * turns:
        tally.crossed(f"user {user}: thread holds {len(messages)} messages, sent {turns} turns")
    for m in messages:
        cxr = (m.get("additional_kwargs") or {}).get("cxr") or {}
        if cxr.get("study_id") in tally.studies - {study_id}:
            tally.crossed(f"user {user}: a reply names another user's study")
    return thread


def ninth_client(url: str, tally: Tally) -> None:
    """A malformed upload (422 expected) and an over-long message (a polite refusal expected)."""
    from langgraph_sdk import get_sync_client

    r = httpx.post(f"{url}/cxr/studies", content=b"\x00not an image" * 64, timeout=60)
    if r.status_code != 422:
        tally.error(f"malformed upload answered {r.status_code}")
    client = get_sync_client(url=url, api_key=None)
    thread = client.threads.create()["thread_id"]
    try:
        out = client.runs.wait(thread, "cxr_agent", input={"messages": [{"role": "user", "content": "x" * 50_000}]})
        last = (out.get("messages") or [{}])[-1]
        if last.get("type") != "ai":
            tally.error("over-long message: no polite refusal")
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code not in (413, 422):  # refused at the door is fine too
            tally.error(f"over-long message answered {exc.response.status_code}")
    client.threads.delete(thread)


class ServerActivity(threading.Thread):
    """Samples the server's own count of runs executing (``/metrics``: ``workers.active``) until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.most_active, self.stop = url, 0, threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while not self.stop.wait(0.1):
                try:
                    workers = http.get("/metrics", params={"format": "json"}).json().get("workers") or {}
                    self.most_active = max(self.most_active, int(workers.get("active") or 0))
                except (httpx.HTTPError, ValueError):
                    continue


def server_heap(url: str) -> dict[str, Any] | None:
    """The production server's own look at its memory (server/standalone/heap.py: resident MiB, C heap
    counts, threads by pool; with ``CXR_AGENT_SERVER_TRACEMALLOC``, the Python heap's growth since the
    last look); None from a server without it (`langgraph dev`)."""
    try:
        return httpx.get(f"{url}/metrics", params={"format": "json", "heap": "1"}, timeout=300).json().get("heap")
    except (httpx.HTTPError, ValueError):
        return None


def slope(values: list[float]) -> float:
    """Least-squares growth per step of ``values`` (MiB per round); 0 for fewer than two."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / sum((x - mean_x) ** 2 for x in range(n))


def memory_row(per_round: list[float]) -> dict[str, Any]:
    """The memory target as a bench row: the slope over the second half of the rounds (the first half is
    warm-up: caches filling to their bounds, the allocator settling), or no value when too few rounds ran."""
    after = per_round[len(per_round) // 2:]
    first = len(per_round) - len(after) + 1
    row: dict[str, Any] = {"benchmark": "load", "metric": "rss_slope_after_warmup", "unit": "MiB/round",
                           "target": f"<= {SLOPE_TARGET:g} MiB/round", "baseline": None, "ratio": None}
    if len(after) < MIN_SLOPE_ROUNDS:
        return {**row, "value": None, "met": None,
                "note": f"{len(per_round)} rounds: at least {2 * MIN_SLOPE_ROUNDS} are needed for a slope"}
    value = round(slope(after), 2)
    return {**row, "value": value, "met": value <= SLOPE_TARGET,
            "note": f"rounds {first}-{len(per_round)}: {min(after):.0f}-{max(after):.0f} MiB resident"}


def upload(url: str, image: Path) -> str:
    r = httpx.post(f"{url}/cxr/studies", content=image.read_bytes(), timeout=120,
                   headers={"x-cxr-file-type": image.suffix.lstrip(".")})
    r.raise_for_status()
    return r.json()["study_id"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_load(*, users: int = 8, turns: int = 5, rounds: int = 4, jobs: int = 4, keep: bool = False,
             database_url: str | None = None) -> dict[str, Any]:
    images = _images(users)
    tally = Tally()
    memory: list[float] = []
    os_threads: list[int] = []
    heap: list[dict[str, Any] | None] = []
    with tempfile.TemporaryDirectory(prefix="cxr-load-") as tmp, served(Path(tmp), jobs, database_url) as (url, pid):
        started = memory_start = rss_mib(pid)
        threads: list[str] = []
        activity = ServerActivity(url)
        activity.start()
        t0 = time.perf_counter()
        studies: list[str] = []
        for n in range(rounds):
            if n == 0 or not keep:  # deleting a round's conversations deleted the studies only they used
                studies = [upload(url, image) for image in images]
            tally.studies = set(studies)
            with ThreadPoolExecutor(users + 1) as pool:
                futures = [pool.submit(one_user, url, u, studies[u], turns, tally) for u in range(users)]
                pool.submit(ninth_client, url, tally)
                done = [t for f in futures if (t := f.result())]
            if keep:
                threads += done
            else:  # the round's conversations deleted (forget, retention): what stays is not their data
                for t in done:
                    httpx.delete(f"{url}/cxr/threads/{t}", timeout=120)
            time.sleep(1.0)  # the queue's idle trim (malloc_trim) runs after the round's last run
            memory.append(rss_mib(pid))
            os_threads.append(thread_count(pid))
            heap.append(server_heap(url))
        wall = time.perf_counter() - t0
        activity.stop.set()
        for t in threads:  # every conversation deleted: is the memory given back?
            httpx.delete(f"{url}/cxr/threads/{t}", timeout=120)
        after_delete = rss_mib(pid)
    growth = [b - a for a, b in zip(memory[1:], memory[2:], strict=False)]  # after the first (warm-up) round
    return {
        "server": "production (Postgres)" if database_url else "langgraph dev",
        "users": users, "turns": turns, "rounds": rounds, "jobs": jobs, "kept_conversations": keep,
        "wall_s": round(wall, 1),
        "turns_done": sum(len(v) for v in tally.times.values()),
        "p50_s": {k: round(statistics.median(v), 3) for k, v in sorted(tally.times.items())},
        "p95_s": {k: round(percentile(v, 0.95), 3) for k, v in sorted(tally.times.items())},
        "errors": tally.errors, "cross_talk": tally.cross_talk,
        "most_turns_sent_at_once": tally.most_in_flight, "most_turns_running_on_server": activity.most_active,
        "rss_mib_start": round(started, 1), "rss_mib_per_round": [round(m, 1) for m in memory],
        "os_threads_per_round": os_threads,
        "rss_growth_mib_per_round_after_warmup": [round(g, 1) for g in growth],
        "memory": memory_row(memory),
        "rss_mib_after_deleting_all": round(after_delete, 1), "rss_mib_before_rounds": round(memory_start, 1),
        **({"server_heap_per_round": heap} if any(heap) else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=4, help="--n-jobs-per-worker of the server")
    parser.add_argument("--keep", action="store_true",
                        help="keep every round's conversations until the end (default: delete them after each round)")
    parser.add_argument("--database-url", default=None,
                        help="load the production server (server/standalone) on this Postgres database "
                             "(an empty one: its threads are the bench's) instead of `langgraph dev`")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = parser.parse_args(argv)
    for name, value in (("users", args.users), ("turns", args.turns), ("rounds", args.rounds), ("jobs", args.jobs)):
        if value < 1:
            parser.error(f"--{name} must be at least 1 (got {value})")
    if args.database_url is not None and not args.database_url.startswith(("postgresql://", "postgres://")):
        parser.error("--database-url must be a postgresql:// URL")
    result = run_load(users=args.users, turns=args.turns, rounds=args.rounds, jobs=args.jobs, keep=args.keep,
                      database_url=args.database_url)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if not result["errors"] and not result["cross_talk"] and result["memory"]["met"] is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
