"""How many traffic records a SIGKILL loses: a real `niche serve`, killed mid-load.

    .venv/bin/python benchmarks/capture_sigkill.py                 # 3 runs, flush every 200 ms
    .venv/bin/python benchmarks/capture_sigkill.py --flush-ms 1000 --runs 2

Method. `niche serve` on an empty SQLite registry (a throwaway NICHE_HOME), no general model:
every chat request names a model that is no task, is answered 404 and is captured (route
`error`), so the load measures capture, not a model. Client threads send requests on fresh
connections for ``--seconds`` (plus a random fraction of a flush interval); then the server gets SIGKILL (no shutdown, no last flush) while
they keep sending. Answered requests (a status came back) are counted against the records in
the database afterwards. A lost record is one that was answered but is not stored; the bound
capture promises is one flush interval of them: ``lost / rate ≤ flush interval`` (plus the
time one batch takes to write). Writes benchmarks/results/capture_sigkill.json and prints a line
per run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _request(port: int) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST", "/v1/chat/completions", BODY, {"content-type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("niche serve exited before it was ready")
        if _ready(port):
            return
        time.sleep(0.1)
    raise SystemExit("niche serve did not become ready")


def _ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def run_once(flush_ms: float, seconds: float, threads: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="niche-sigkill-"))
    port = _free_port()
    env = {
        **os.environ,
        "NICHE_HOME": str(home),
        "NICHE_GATEWAY_CAPTURE_FLUSH_MS": str(flush_ms),
    }
    for name in ("NICHE_DATABASE_URL", "NICHE_GENERAL_BASE_URL", "NICHE_GENERAL_MODEL"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "niche", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_ready(port, process)
    answered = [0] * threads
    stop = threading.Event()

    def load(i: int) -> None:
        while not stop.is_set():
            if _request(port) is not None:
                answered[i] += 1

    workers = [threading.Thread(target=load, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    # A random phase against the flush ticks: the kill lands anywhere in an interval.
    loaded_s = seconds + random.uniform(0, flush_ms / 1000)
    time.sleep(loaded_s)
    killed_after = sum(answered)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stop.set()
    for worker in workers:
        worker.join()
    total = sum(answered)
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{home / 'niche.db'}")
    with engine.connect() as connection:
        stored = int(connection.execute(text("SELECT count(*) FROM traffic_records")).scalar_one())
    engine.dispose()
    rate = killed_after / loaded_s
    lost = total - stored
    return {
        "flush_ms": flush_ms,
        "seconds": round(loaded_s, 3),
        "answered": total,
        "stored": stored,
        "lost": lost,
        "requests_per_s": round(rate, 1),
        "lost_ms_of_traffic": round(1000 * lost / rate, 1) if rate else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flush-ms", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        result = run_once(args.flush_ms, args.seconds, args.threads)
        runs.append(result)
        print(json.dumps(result))
    out = ROOT / "benchmarks" / "results" / "capture_sigkill.json"
    out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
