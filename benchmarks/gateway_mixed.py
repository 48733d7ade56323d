"""Mixed traffic for benchmarks/gateway.py: varied BANKING77 requests through `wrk`, and coverage.

`hey` sends one request body; on a task whose specialist routes by text (the two-stage kind's
static tier answers the texts it is confident about) one body measures one route only. Here
`wrk` (one thread, pinned to the client core) cycles through a file of chat requests, one per
BANKING77 test text in a fixed shuffled order, via a Lua script; its `done` hook prints one
JSON line (requests, duration, errors, latency percentiles), parsed into the same row as hey's.

Which route each text takes does not depend on its batch (the static tier's vector of a text
is its own), so the shares are computed once, offline, by loading the measured model version
in a subprocess and routing every text: ``static`` (the two-stage kind's first tier answers)
and ``specialist`` (its confidence is at least the task's ``cascade_threshold``: no general
model call). They are weighted by how often wrk sent each text (it cycles in order, so the
first ``requests mod n`` texts once more than the others).

    >>> texts = write_bodies(Path("bodies.jsonl"), Path("../shared/datasets"), "banking77")
    >>> row = wrk(url, Path("bodies.jsonl"), concurrency=16, duration_s=3, client_core="1")
    >>> row["rps"], traffic_shares(routes, row["requests"])["static"]
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["LUA", "ROUTES", "routes_of", "traffic_shares", "write_bodies", "wrk", "wrk_script"]

SEED = 0

# %(bodies)s is replaced by the bodies file's path as a Lua string literal.
LUA = """
local bodies = {}
for line in io.lines(%(bodies)s) do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d,"max_us":%%d,"bodies":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, #bodies))
end
"""

# Run by `python -c` with NICHE_HOME set: argv task, version, texts file (JSON list).
ROUTES = """
import json, sys
from niche.encoders import default_encoder
from niche.registry.store import Registry
from niche.settings import Settings
from niche.workflows.models import load_specialist

task, version, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
texts = json.loads(open(path, encoding="utf-8").read())
settings = Settings()
registry = Registry(settings=settings)
record = registry.models.get(task, version)
threshold = registry.tasks.get(task).spec.cascade_threshold
spec = load_specialist(record, settings, encoder=default_encoder(settings, cache=False))
predictions = spec.predict(texts)
static = spec.route(texts)[1].tolist() if hasattr(spec, "route") else [False] * len(texts)
specialist = [float(c) >= threshold for c in predictions.confidences]
print(json.dumps({"kind": record.kind, "cascade_threshold": threshold, "static": static,
                  "specialist": specialist}))
"""


def write_bodies(
    path: Path, datasets_dir: Path, task: str, *, limit: int | None = None
) -> list[str]:
    """One chat request per BANKING77 test text (shuffled with a fixed seed) into ``path``,
    one JSON object a line; returns the texts in that order."""
    source = Path(datasets_dir) / "banking77" / "test.csv"
    with source.open(encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle) if row["text"].strip()]
    random.Random(SEED).shuffle(texts)
    texts = texts[:limit] if limit else texts
    with path.open("w", encoding="utf-8") as out:
        for text in texts:
            body = {"model": task, "messages": [{"role": "user", "content": text}]}
            out.write(json.dumps(body, separators=(",", ":")) + "\n")
    return texts


def wrk_script(bodies: Path, workdir: Path) -> Path:
    """The Lua script cycling through ``bodies``, written into ``workdir``."""
    script = workdir / "bodies.lua"
    script.write_text(LUA % {"bodies": json.dumps(str(bodies))}, encoding="utf-8")
    return script


def wrk(
    url: str, bodies: Path, *, concurrency: int, duration_s: float, client_core: str
) -> dict[str, Any]:
    """wrk pinned to ``client_core``, cycling through ``bodies``; a row like hey's."""
    if shutil.which("wrk") is None:
        raise RuntimeError("`wrk` is not on PATH; install it first (apt-get install wrk)")
    script = wrk_script(bodies, bodies.parent)
    argv = ["taskset", "-c", client_core, "wrk", "-t1", f"-c{concurrency}"]
    argv += [f"-d{max(duration_s, 1):g}s", "--timeout", "30s", "-s", str(script), url]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 120, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}")
    summary = json.loads(lines[-1].removeprefix("WRK_JSON "))
    errors = {
        name: summary[name] for name in ("connect", "read", "write", "timeout") if summary[name]
    }
    requests, seconds = summary["requests"], summary["duration_us"] / 1e6
    return {
        "rps": round(requests / seconds, 1) if seconds > 0 else None,
        "requests": requests,
        "p50_ms": round(summary["p50_us"] / 1e3, 2),
        "p99_ms": round(summary["p99_us"] / 1e3, 2),
        "p99_is_slowest": False,
        "slowest_ms": round(summary["max_us"] / 1e3, 2),
        "status_codes": {},
        "non_2xx": summary["status"],
        "errors": errors,
        "distinct_bodies": summary["bodies"],
        "valid": requests > 0 and not summary["status"] and not errors,
    }


def routes_of(
    python: str, env: dict[str, str], task: str, version: int, texts: list[str], workdir: Path
) -> dict[str, Any]:
    """Each text's routes by model ``version`` of ``task`` (see :data:`ROUTES`), in a
    subprocess so that nothing it loads stays in the benchmark's process."""
    path = workdir / f"texts-{task}-{version}.json"
    path.write_text(json.dumps(texts), encoding="utf-8")
    done = subprocess.run(
        [python, "-c", ROUTES, task, str(version), str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"routing the texts with {task} v{version} failed: {done.stderr[-800:]}")
    routes: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return routes


def traffic_shares(routes: dict[str, Any], requests: int) -> dict[str, float | None]:
    """The share of ``requests`` (sent cycling through the texts in order) on each route."""
    n = len(routes["static"])
    if not n or not requests:
        return {"static": None, "specialist": None}
    cycles, extra = divmod(requests, n)
    counts = [cycles + (1 if i < extra else 0) for i in range(n)]
    return {
        key: round(sum(c for c, hit in zip(counts, routes[key], strict=True) if hit) / requests, 4)
        for key in ("static", "specialist")
    }
