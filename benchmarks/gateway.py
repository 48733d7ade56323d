"""Gateway benchmark: niche's gateway against the LiteLLM proxy, in one run.

    .venv/bin/python benchmarks/gateway.py            # or: make bench (needs `hey`, see below)
    .venv/bin/python benchmarks/gateway.py --quick    # 3 s per measurement instead of 10 s

Method. A fast OpenAI-compatible stub (benchmarks/stub_upstream.py) plays the general model;
`hey` sends the same small JSON chat request (POST, ~83 bytes) for a fixed duration at
concurrency 1 and 16, on keep-alive connections, and its text summary is parsed (Requests/sec,
latency 50 % and 99 %, status codes, errors). Every system under test runs one worker pinned to
core 0 (`taskset -c 0`); hey and the stub share core 1, so that the proxy's CPU cost is what
limits it. Measured, one after another (each server alone on core 0):

- stub direct: hey → stub, the harness's floor; the `added_*` latencies of the others are their
  latency minus this one's at the same concurrency;
- litellm: the LiteLLM proxy (pinned version, own virtualenv under benchmarks/.venvs/, created
  when missing), model `bench-model` → `openai/bench-model` at the stub, a master key, no
  database, logging off, `--num_workers 1`;
- niche-pass-through: `niche serve --workers 1` with the stub as its general model;
  `model: bench-model` is not a task, so it is passed through to the stub;
- niche-task: the same gateway, `model: sms_spam`, a short SMS as the message: answered by the
  task's champion specialist (micro-batched encoder + classifier), no upstream call. The task is
  created first in a throwaway NICHE_HOME by niche's quickstart on the sms_spam catalog dataset
  (curate, train, evaluate, gate; ~1.5 min), unless --niche-home names a prepared one. Its
  champion is the `text` kind (MiniLM encoder + head);
- niche-task-two-stage: the same task path after a `text-two-stage` version (a static-embedding
  first tier before the same MiniLM specialist; trained on the same dataset version when the
  home has none) is made champion, in a fresh `niche serve`: its gate is run, and the move is
  forced when the gate refuses (the result records the gate's checks and `forced`). Each of the
  two kinds is made champion again before its own server starts, so a reused home works too;
- niche-banking77-mixed and niche-banking77-mixed-two-stage: the task path with VARIED requests,
  in the same two servers: a `banking77` task made by the same quickstart flow (the full
  BANKING77 training split; its two-stage version trained as above), and `wrk` cycling through
  one request per BANKING77 test text (3,080, shuffled; benchmarks/gateway_mixed.py). One
  body, as hey sends, takes one route only (on sms_spam the two-stage threshold chosen is 0:
  MiniLM never runs), so the task rows above are an upper bound; these rows also give the
  share of the requests sent that the static tier answered (`static_share`) and that needed no
  general-model cascade (`specialist_share`), from routing the texts offline with the measured
  model version (a text's route does not depend on its batch).

Each measurement follows an unrecorded 1 s warm-up at the same concurrency, and records how busy
the CPUs were for 1 s before it, servers idle (`background_cpu_busy_pct`, a warning above 10 %):
other work on the machine, e.g. a test suite, skews every figure; run it on a quiet machine.
A non-2xx status or a transport error makes that measurement, and the run, invalid (exit
status 1; 2 when a server fails to start). Writes benchmarks/results/gateway.json (rps, p50/p99,
added latency, ratios niche / LiteLLM, versions, commit, CPU, date) and prints a short table.

Needs `hey` and `wrk` on PATH (Debian: apt-get install hey wrk), `taskset` (util-linux), PyPI
the first time (LiteLLM's virtualenv), and the catalog dataset under NICHE_DATASETS (../shared/datasets when
unset). Options: --duration S, --quick, --niche-home DIR (reuse a prepared task), --niche-bin.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway_mixed import routes_of, traffic_shares, write_bodies, wrk

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gateway.json"
STUB = ROOT / "benchmarks" / "stub_upstream.py"
NICHE_BIN = ROOT / ".venv" / "bin" / "niche"
LITELLM_VERSION = "1.108.7"  # newer releases need a `litellm-proxy` wheel that PyPI lacks here
LITELLM_VENV = ROOT / "benchmarks" / ".venvs" / "litellm"
LITELLM_MASTER_KEY = "sk-bench-master"

SUT_CORE, CLIENT_CORE = "0", "1"
CONCURRENCY = (1, 16)
WARMUP_S = 1
BUSY_WARNING_PCT = 10.0
TASK = "sms_spam"
MODEL = "bench-model"
PASS_THROUGH_BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Reply with ok only"}],
}
SMS = "Running late, be there in 10. Can you order me a flat white?"
TASK_BODY = {"model": TASK, "messages": [{"role": "user", "content": SMS}]}
# The task path is measured once per kind, each as the task's champion in its own server.
TASK_KINDS = {"niche-task": "text", "niche-task-two-stage": "text-two-stage"}
# ... and with varied requests (every BANKING77 test text, cycled by wrk) on a banking77 task.
MIXED_TASK = "banking77"
MIXED_KINDS = {
    "niche-banking77-mixed": "text",
    "niche-banking77-mixed-two-stage": "text-two-stage",
}
CHAT_PATH = "/v1/chat/completions"
STUB_ANSWER = "ok"  # what benchmarks/stub_upstream.py always answers


class BenchmarkError(RuntimeError):
    """A precondition or a server failed; the message says which and how to fix it."""


# -- processes -------------------------------------------------------------------------------


class Server:
    """A server process in its own session, its output in a log file; stopped by :meth:`stop`."""

    def __init__(
        self, name: str, argv: list[str], env: Mapping[str, str], log: Path, cwd: Path
    ) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to its process group, SIGKILL after ``timeout`` seconds."""
        if not self.alive():
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def problems(self, limit: int = 20) -> dict[str, Any]:
        """Lines of its log that look like errors (tracebacks, ERROR, exceptions)."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {"count": 0, "lines": []}
        pattern = re.compile(r'Traceback|\bERROR\b|Error:|Exception|HTTP/1\.[01]" 5\d\d')
        hits = [line.strip() for line in text.splitlines() if pattern.search(line)]
        return {"count": len(hits), "lines": hits[:limit]}


@contextlib.contextmanager
def running(name: str, argv: list[str], env: Mapping[str, str], workdir: Path) -> Iterator[Server]:
    server = Server(name, argv, env, workdir / f"{name}.log", workdir)
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str,
    url: str,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(
    server: Server,
    url: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
) -> float:
    """Poll ``url`` until it answers 200; the seconds it took. Fails when the server exits."""
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout:
        if not server.alive():
            raise BenchmarkError(
                f"{server.name} exited with status {server.process.returncode} before it was "
                f"ready; the end of {server.log}:\n{server.tail()}"
            )
        try:
            status, content = http("POST" if body else "GET", url, body, headers, timeout=5.0)
            if status == 200:
                return time.monotonic() - started
            last = f"HTTP {status}: {content[:300]!r}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise BenchmarkError(
        f"{server.name} was not ready at {url} after {timeout:.0f} s ({last}); "
        f"the end of {server.log}:\n{server.tail()}"
    )


def check_answer(
    name: str, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> dict[str, Any]:
    """One request before the load: it must be a 200 chat.completion; returns what it said."""
    status, content = http("POST", url, body, headers, timeout=30.0)
    try:
        payload = json.loads(content)
        answer = payload["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        payload, answer = None, None
    if status != 200 or answer is None:
        raise BenchmarkError(
            f"{name}: POST {url} with {json.dumps(body)} answered HTTP {status}: {content[:500]!r}"
        )
    sample = {"status": status, "content": answer, "model": payload.get("model")}
    if "niche" in payload:  # niche's own account of how it answered (route, confidence, …)
        sample["niche"] = payload["niche"]
    return {**sample, "bytes": len(content)}


# -- load ------------------------------------------------------------------------------------


def hey(
    url: str, body: Mapping[str, Any], concurrency: int, duration_s: float, headers: dict[str, str]
) -> dict[str, Any]:
    """Run hey pinned to the client core; its summary, parsed."""
    argv = ["taskset", "-c", CLIENT_CORE, "hey", "-z", f"{duration_s:g}s", "-c", str(concurrency)]
    argv += ["-m", "POST", "-T", "application/json", "-d", json.dumps(body, separators=(",", ":"))]
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"]
    argv.append(url)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 120, check=False
    )
    if done.returncode != 0:
        raise BenchmarkError(f"hey failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return parse_hey(done.stdout)


def parse_hey(text: str) -> dict[str, Any]:
    """Requests/sec, latency percentiles (ms), status codes and errors from hey's summary."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    slowest = re.search(r"Slowest:\s+([\d.]+) secs", text)
    percentiles = {int(p): float(s) * 1e3 for p, s in re.findall(r"(\d+)% in ([\d.]+) secs", text)}
    codes: dict[str, int] = {}
    status_part = text.split("Status code distribution:", 1)[-1].split("Error distribution:")[0]
    for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", status_part):
        codes[code] = codes.get(code, 0) + int(count)
    errors: dict[str, int] = {}
    if "Error distribution:" in text:
        for count, message in re.findall(
            r"^\s*\[(\d+)\]\s+(.+)$", text.split("Error distribution:", 1)[1], re.M
        ):
            # One line per connection: fold the ports away so that alike errors add up.
            key = re.sub(r"127\.0\.0\.1:\d+->", "127.0.0.1:*->", message.strip())
            errors[key] = errors.get(key, 0) + int(count)
    ok = sum(n for code, n in codes.items() if code.startswith("2"))
    p99 = percentiles.get(99)
    return {
        "rps": round(float(rps.group(1)), 1) if rps else None,
        "requests": sum(codes.values()) + sum(errors.values()),
        "p50_ms": round(percentiles[50], 2) if 50 in percentiles else None,
        "p99_ms": round(p99, 2) if p99 is not None else None,
        # hey prints no 99 % line under 100 samples; the slowest then stands in for it.
        "p99_is_slowest": p99 is None and slowest is not None,
        "slowest_ms": round(float(slowest.group(1)) * 1e3, 2) if slowest else None,
        "status_codes": codes,
        "non_2xx": sum(codes.values()) - ok,
        "errors": errors,
        "valid": bool(rps) and ok > 0 and ok == sum(codes.values()) and not errors,
    }


def cpu_busy_pct(seconds: float = 1.0) -> float | None:
    """How busy all CPUs were over the next ``seconds`` (/proc/stat), in percent."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(100 * (1 - (idle1 - idle0) / max(total1 - total0, 1)), 1)


def measure(
    name: str,
    url: str,
    body: Mapping[str, Any],
    headers: dict[str, str],
    duration_s: float,
) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for concurrency in CONCURRENCY:
        # Other work on the machine skews every figure: measure it while the servers idle.
        background = cpu_busy_pct()
        if background is not None and background > BUSY_WARNING_PCT:
            print(f"  warning: the CPUs were {background} % busy before this run", flush=True)
        hey(url, body, concurrency, WARMUP_S, headers)
        row = hey(url, body, concurrency, duration_s, headers)
        if row["p99_ms"] is None and row["p99_is_slowest"]:
            row["p99_ms"] = row["slowest_ms"]
        rows[f"c{concurrency}"] = {
            "concurrency": concurrency,
            **row,
            "background_cpu_busy_pct": background,
        }
        flag = "" if row["valid"] else f"  INVALID: {row['status_codes']} {row['errors']}"
        print(
            f"  {name:31s} c={concurrency:<3d} {row['rps'] or 0:10.1f} req/s  "
            f"p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms{flag}",
            flush=True,
        )
    return rows


def measure_mixed(
    name: str, url: str, bodies: Path, routes: dict[str, Any], duration_s: float
) -> dict[str, dict[str, Any]]:
    """Like :func:`measure`, with wrk cycling through ``bodies``; each row also gives the
    shares of the requests sent that the static tier and the specialist answered."""
    rows: dict[str, dict[str, Any]] = {}
    for concurrency in CONCURRENCY:
        background = cpu_busy_pct()
        if background is not None and background > BUSY_WARNING_PCT:
            print(f"  warning: the CPUs were {background} % busy before this run", flush=True)
        try:
            wrk(url, bodies, concurrency=concurrency, duration_s=WARMUP_S, client_core=CLIENT_CORE)
            row = wrk(
                url, bodies, concurrency=concurrency, duration_s=duration_s, client_core=CLIENT_CORE
            )
        except RuntimeError as exc:
            raise BenchmarkError(str(exc)) from exc
        shares = traffic_shares(routes, row["requests"])
        rows[f"c{concurrency}"] = {
            "concurrency": concurrency,
            **row,
            "static_share": shares["static"],
            "specialist_share": shares["specialist"],
            "background_cpu_busy_pct": background,
        }
        flag = "" if row["valid"] else f"  INVALID: non-2xx {row['non_2xx']} {row['errors']}"
        print(
            f"  {name:31s} c={concurrency:<3d} {row['rps'] or 0:10.1f} req/s  "
            f"p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  static tier "
            f"{shares['static']}  no cascade {shares['specialist']}{flag}",
            flush=True,
        )
    return rows


# -- systems ---------------------------------------------------------------------------------


def ensure_litellm() -> Path:
    """LiteLLM's proxy in its own virtualenv at the pinned version; its `litellm` script."""
    python, script = LITELLM_VENV / "bin" / "python", LITELLM_VENV / "bin" / "litellm"
    if python.exists() and script.exists() and venv_version(python, "litellm") == LITELLM_VERSION:
        return script
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} …", flush=True)
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
    )
    return script


def venv_version(python: Path, package: str) -> str | None:
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def litellm_config(workdir: Path, stub_port: int) -> Path:
    """Model `bench-model` → `openai/bench-model` at the stub; no database, logging off."""
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{stub_port}/v1\n"
        "      api_key: sk-dummy-upstream\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
        "  turn_off_message_logging: true\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n",
        encoding="utf-8",
    )
    return config


def niche_available(niche_bin: Path) -> str | None:
    """None when `niche serve` exists; otherwise why the niche systems are skipped."""
    if not niche_bin.exists():
        return f"{niche_bin} is missing (run `make venv`)"
    done = subprocess.run(
        [str(niche_bin), "serve", "--help"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"`niche serve --help` failed ({done.returncode}): {done.stderr.strip()[-300:]}"
    return None


def datasets_dir() -> str:
    return os.environ.get("NICHE_DATASETS") or str(ROOT.parent / "shared" / "datasets")


def prepare_task(
    niche_bin: Path, env: Mapping[str, str], home: Path, task: str = TASK
) -> dict[str, Any]:
    """Give ``home`` a ``task`` (a catalog dataset's name) with a champion (quickstart),
    unless it has one.

    `niche quickstart` runs in its own process, so that none of its threads, caches or memory
    stay behind in this one while the servers are measured.
    """
    from niche.errors import NicheError
    from niche.registry.store import Registry
    from niche.settings import Settings

    with contextlib.suppress(NicheError):
        champion = Registry(settings=Settings(env)).promotions.get(task, "champion")
        if champion is not None:
            print(f"task {task} already has champion v{champion.version} in {home}", flush=True)
            return {"task": task, "model_version": champion.version, "prepared": "reused"}
    print(f"preparing task {task} in {home} (niche quickstart: curate, train, gate) …", flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        [str(niche_bin), "quickstart", "--dataset", task, "--kind", "text", "--json"],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchmarkError(
            f"`niche quickstart --dataset {task}` failed ({done.returncode}): "
            f"{done.stderr.strip()[-1000:]}"
        )
    report = json.loads(done.stdout)
    gate = report["gate"]
    if report["registry"]["task"] != task or not (gate["moved"] or gate["already"]):
        raise BenchmarkError(f"quickstart did not promote a champion for {task}: {gate}")
    return {
        "task": task,
        "model_version": report["registry"]["model_version"],
        "test_accuracy": round(report["specialist"]["accuracy"], 4),
        "prepared": "niche quickstart",
        "prepare_s": round(time.perf_counter() - started, 1),
    }


def niche_json(niche_bin: Path, env: Mapping[str, str], *argv: str) -> tuple[int, Any]:
    """Run `niche ARGV --json`; its exit status and parsed output (None when not JSON)."""
    done = subprocess.run(
        [str(niche_bin), *argv, "--json"],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, {"stderr": done.stderr.strip()[-1000:]}


def prepare_kinds(
    niche_bin: Path, env: Mapping[str, str], task: str = TASK
) -> dict[str, dict[str, Any]]:
    """The newest version of each of :data:`TASK_KINDS`' kinds for ``task``, training the
    two-stage one on the text one's dataset version when the home has none."""
    status, models = niche_json(niche_bin, env, "models", "list", task)
    if status != 0 or not isinstance(models, list):
        raise BenchmarkError(f"`niche models list {task}` failed ({status}): {models}")
    newest = {model["kind"]: model for model in models}  # newest last
    if "text" not in newest:
        raise BenchmarkError(f"task {task} has no `text` model version to measure")
    if "text-two-stage" not in newest:
        fingerprint = newest["text"]["dataset_fingerprint"]
        print(f"training a text-two-stage version of {task} …", flush=True)
        started = time.perf_counter()
        status, model = niche_json(
            niche_bin, env, "train", fingerprint, "--task", task, "--kind", "text-two-stage"
        )
        if status != 0:
            raise BenchmarkError(f"`niche train --kind text-two-stage` failed ({status}): {model}")
        model["train_s"] = round(time.perf_counter() - started, 1)
        newest["text-two-stage"] = model
    kinds = {}
    for kind in TASK_KINDS.values():
        model = newest[kind]
        lineage = model.get("lineage", {})
        kinds[kind] = {
            "model_version": model["version"],
            "fit_seconds": lineage.get("fit_seconds"),
            **({"train_s": model["train_s"]} if "train_s" in model else {}),
            **({"threshold": lineage["threshold"]} if "threshold" in lineage else {}),
            **({"validation": lineage["validation"]} if "validation" in lineage else {}),
        }
    return kinds


def make_champion(
    niche_bin: Path, env: Mapping[str, str], kind: str, version: int, task: str = TASK
) -> dict:
    """Promote ``version`` to the task's champion through its gate; forced when refused."""
    status, decision = niche_json(niche_bin, env, "promote", task, str(version))
    forced = False
    if status == 4:  # the gate refused: record why, then move the alias anyway to measure it
        why = f"benchmarks/gateway.py: measure the task path of the {kind} kind"
        forced_status, forced_decision = niche_json(
            niche_bin, env, "promote", task, str(version), "--force", "--why", why
        )
        if forced_status != 0:
            raise BenchmarkError(f"forcing {task} v{version} failed: {forced_decision}")
        forced = True
    elif status != 0:
        raise BenchmarkError(f"`niche promote {task} {version}` failed ({status}): {decision}")
    checks = decision.get("checks", []) if isinstance(decision, dict) else []
    return {
        "passed": decision.get("passed") if isinstance(decision, dict) else None,
        "already": decision.get("already") if isinstance(decision, dict) else None,
        "forced": forced,
        "checks": {check["name"]: check.get("detail") for check in checks},
    }


# -- run -------------------------------------------------------------------------------------


def added(rows: dict[str, dict[str, Any]], floor: dict[str, dict[str, Any]]) -> None:
    for key, row in rows.items():
        for metric in ("p50_ms", "p99_ms"):
            base = floor.get(key, {}).get(metric)
            value = row.get(metric)
            row[f"added_{metric}"] = (
                round(value - base, 2) if value is not None and base is not None else None
            )


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not a.get("rps") or not b.get("rps"):
        return None
    return round(a["rps"] / b["rps"], 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    duration = 3.0 if args.quick else args.duration
    for tool in ("hey", "wrk", "taskset"):
        if shutil.which(tool) is None:
            hint = f"apt-get install {tool}" if tool != "taskset" else "apt-get install util-linux"
            raise BenchmarkError(f"`{tool}` is not on PATH; install it first ({hint})")
    if len(os.sched_getaffinity(0)) < 2:
        raise BenchmarkError("needs two usable CPU cores (0 and 1) for pinning")
    niche_bin = Path(args.niche_bin)
    niche_missing = niche_available(niche_bin)
    litellm = ensure_litellm()

    systems: dict[str, dict[str, Any]] = {}
    samples: dict[str, Any] = {}
    logs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    task_info: dict[str, Any] | None = None
    python = sys.executable
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    with tempfile.TemporaryDirectory(prefix="niche-gateway-bench-") as tmp:
        workdir = Path(tmp)
        home = Path(args.niche_home).resolve() if args.niche_home else workdir / "niche-home"
        niche_env = {**base_env, "NICHE_HOME": str(home), "NICHE_DATASETS": datasets_dir()}
        kinds_info: dict[str, dict[str, Any]] = {}
        mixed_kinds: dict[str, dict[str, Any]] = {}
        routes: dict[str, dict[str, Any]] = {}
        bodies = workdir / f"{MIXED_TASK}-bodies.jsonl"
        if niche_missing is None:
            task_info = prepare_task(niche_bin, niche_env, home)  # before any server: 2 cores
            kinds_info = prepare_kinds(niche_bin, niche_env)
            task_info["kinds"] = kinds_info
            mixed_info = prepare_task(niche_bin, niche_env, home, MIXED_TASK)
            mixed_kinds = prepare_kinds(niche_bin, niche_env, MIXED_TASK)
            texts = write_bodies(bodies, Path(datasets_dir()), MIXED_TASK)
            for kind, info in mixed_kinds.items():
                print(f"routing {len(texts)} {MIXED_TASK} test texts with its {kind} …", flush=True)
                try:
                    routes[kind] = routes_of(
                        python, niche_env, MIXED_TASK, info["model_version"], texts, workdir
                    )
                except RuntimeError as exc:
                    raise BenchmarkError(str(exc)) from exc
                info["cascade_threshold"] = routes[kind]["cascade_threshold"]
                info["shares_of_the_texts"] = traffic_shares(routes[kind], len(texts))
            mixed_info |= {"kinds": mixed_kinds, "request_texts": len(texts)}
            task_info = {**task_info, "mixed": mixed_info}

        stub_port = free_port()
        stub_argv = ["taskset", "-c", CLIENT_CORE, python, str(STUB), "--port", str(stub_port)]
        with running("stub", stub_argv, base_env, workdir) as stub:
            stub_url = f"http://127.0.0.1:{stub_port}"
            wait_ready(stub, f"{stub_url}/v1/models", timeout=30)
            print(f"measuring ({duration:g} s per run, concurrency {CONCURRENCY}) …", flush=True)
            systems["stub-direct"] = measure(
                "stub-direct", stub_url + CHAT_PATH, PASS_THROUGH_BODY, {}, duration
            )

            port = free_port()
            env = {**base_env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
            argv = ["taskset", "-c", SUT_CORE, str(litellm), "--config"]
            argv += [str(litellm_config(workdir, stub_port)), "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--num_workers", "1"]
            auth = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
            with running("litellm", argv, env, workdir) as server:
                url = f"http://127.0.0.1:{port}"
                wait_ready(server, f"{url}/health/liveliness", timeout=180)
                samples["litellm"] = check_answer(
                    "litellm", url + CHAT_PATH, PASS_THROUGH_BODY, auth
                )
                systems["litellm"] = measure(
                    "litellm", url + CHAT_PATH, PASS_THROUGH_BODY, auth, duration
                )
                logs["litellm"] = server.problems()

            if niche_missing is not None:
                for name in ("niche-pass-through", *TASK_KINDS, *MIXED_KINDS):
                    skipped[name] = niche_missing
                print(f"  niche skipped: {niche_missing}", flush=True)
            else:
                env = {
                    **niche_env,
                    "NICHE_GENERAL_BASE_URL": f"{stub_url}/v1",
                    "NICHE_GENERAL_MODEL": MODEL,
                }
                mixed_systems = dict(zip(TASK_KINDS.values(), MIXED_KINDS, strict=True))
                for task_system, kind in TASK_KINDS.items():
                    version = kinds_info[kind]["model_version"]
                    kinds_info[kind]["gate"] = make_champion(niche_bin, niche_env, kind, version)
                    mixed_version = mixed_kinds[kind]["model_version"]
                    mixed_kinds[kind]["gate"] = make_champion(
                        niche_bin, niche_env, kind, mixed_version, MIXED_TASK
                    )
                    mixed_body = json.loads(bodies.read_text(encoding="utf-8").split("\n", 1)[0])
                    port = free_port()
                    argv = ["taskset", "-c", SUT_CORE, str(niche_bin), "serve"]
                    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
                    with running(f"niche-{kind}", argv, env, workdir) as server:
                        url = f"http://127.0.0.1:{port}"
                        ready_s = wait_ready(server, f"{url}/readyz", timeout=120)
                        # The tasks' specialists may load after /readyz: wait for their answers.
                        wait_ready(server, url + CHAT_PATH, timeout=120, body=TASK_BODY)
                        wait_ready(server, url + CHAT_PATH, timeout=120, body=mixed_body)
                        task_sample = check_answer("niche", url + CHAT_PATH, TASK_BODY, {})
                        if task_sample["content"] == STUB_ANSWER:
                            raise BenchmarkError(
                                f"niche answered model {TASK!r} with the upstream stub's answer "
                                f"{task_sample['content']!r}: the task path was not taken"
                            )
                        samples[task_system] = task_sample
                        mixed_system = mixed_systems[kind]
                        samples[mixed_system] = check_answer(
                            "niche", url + CHAT_PATH, mixed_body, {}
                        )
                        plan = [(task_system, TASK_BODY)]
                        if kind == "text":  # the pass-through path once, beside the text kind
                            samples["niche-pass-through"] = check_answer(
                                "niche", url + CHAT_PATH, PASS_THROUGH_BODY, {}
                            )
                            samples["niche_ready_s"] = round(ready_s, 2)
                            plan.insert(0, ("niche-pass-through", PASS_THROUGH_BODY))
                        for name, body in plan:
                            systems[name] = measure(name, url + CHAT_PATH, body, {}, duration)
                        systems[mixed_system] = measure_mixed(
                            mixed_system, url + CHAT_PATH, bodies, routes[kind], duration
                        )
                        logs[f"niche-{kind}"] = server.problems()
                        if not server.alive():
                            raise BenchmarkError(f"niche exited under load:\n{server.tail()}")
            logs["stub"] = stub.problems()

    for name, rows in systems.items():
        if name != "stub-direct":
            added(rows, systems["stub-direct"])
    invalid = sorted(
        f"{name} {key}"
        for name, rows in systems.items()
        for key, row in rows.items()
        if not row["valid"]
    )
    ratios = {}
    for name in ("niche-pass-through", *TASK_KINDS):
        for key in (f"c{c}" for c in CONCURRENCY):
            ratios[f"{name.replace('-', '_')}_vs_litellm_rps_{key}"] = ratio(
                systems.get(name, {}).get(key), systems["litellm"].get(key)
            )
    for key in (f"c{c}" for c in CONCURRENCY):
        ratios[f"niche_task_two_stage_vs_niche_task_rps_{key}"] = ratio(
            systems.get("niche-task-two-stage", {}).get(key), systems.get("niche-task", {}).get(key)
        )
        text_system, two_stage_system = MIXED_KINDS
        ratios[f"niche_banking77_mixed_two_stage_vs_text_rps_{key}"] = ratio(
            systems.get(two_stage_system, {}).get(key), systems.get(text_system, {}).get(key)
        )
    result = {
        "benchmark": "gateway",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(litellm),
        "settings": {
            "duration_s": duration,
            "warmup_s": WARMUP_S,
            "concurrency": list(CONCURRENCY),
            "client": "hey, POST, keep-alive",
            "pinning": {
                "system_under_test": f"core {SUT_CORE}, one worker",
                "hey": f"core {CLIENT_CORE}",
                "stub_upstream": f"core {CLIENT_CORE}",
            },
            "pass_through_body": PASS_THROUGH_BODY,
            "pass_through_body_bytes": len(json.dumps(PASS_THROUGH_BODY, separators=(",", ":"))),
            "task_body": TASK_BODY,
            "task_body_bytes": len(json.dumps(TASK_BODY, separators=(",", ":"))),
            "litellm": "master key, no database, LITELLM_LOG=ERROR, set_verbose false, "
            "LITELLM_LOCAL_MODEL_COST_MAP=True, --num_workers 1",
            "niche": "niche serve --workers 1, default NICHE_GATEWAY_* settings, no API key",
            "task_kinds": dict(TASK_KINDS),
            "mixed_kinds": dict(MIXED_KINDS),
            "mixed_load": "wrk -t1 (client core), a Lua script cycling through one chat request "
            f"per {MIXED_TASK} test text (shuffled, seed 0); route shares computed offline by "
            "the measured model version, weighted by how often each text was sent",
        },
        "task": task_info,
        "systems": systems,
        "ratios": ratios,
        "samples": samples,
        "server_log_problems": logs,
        "skipped": skipped,
        "invalid": invalid,
        "valid": not invalid and not skipped,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_table(result)
    return result


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                model = value
                break
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(litellm: Path) -> dict[str, Any]:
    def command(*argv: str) -> str | None:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.stdout.strip() or None if done.returncode == 0 else None

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    dirty = command("git", "-C", str(ROOT), "status", "--porcelain", "--", "src")
    return {
        "niche": version("niche"),
        "niche_commit": command("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
        "niche_src_uncommitted_changes": bool(dirty),
        "litellm": venv_version(litellm.parent / "python", "litellm"),
        "litellm_python": command(
            str(litellm.parent / "python"), "-c", "import sys; print(sys.version.split()[0])"
        ),
        "hey": command("dpkg-query", "-W", "-f=${Version}", "hey"),
        "uvloop": version("uvloop"),
    }


def print_table(result: dict[str, Any]) -> None:
    machine_, versions_ = result["machine"], result["versions"]
    print(
        f"\n{machine_['cpu_model']}; litellm {versions_['litellm']}; niche "
        f"{versions_['niche']} @ {versions_['niche_commit']}; "
        f"{result['settings']['duration_s']:g} s per run"
    )
    header = f"{'system':31s} {'c':>3s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}"
    print(header + f" {'+p50 ms':>8s} {'+p99 ms':>8s} {'non-2xx':>8s}")

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}"

    for name, rows in result["systems"].items():
        for row in rows.values():
            bad = row["non_2xx"] + sum(row["errors"].values())
            shares = ""
            if row.get("static_share") is not None:
                shares = (
                    f"  static {row['static_share']:.0%} no-cascade {row['specialist_share']:.0%}"
                )
            print(
                f"{name:31s} {row['concurrency']:3d} {row['rps'] or 0:9.1f} "
                f"{cell(row['p50_ms']):>8s} {cell(row['p99_ms']):>8s} "
                f"{cell(row.get('added_p50_ms')):>8s} {cell(row.get('added_p99_ms')):>8s} "
                f"{bad:8d}{shares}"
            )
    for name, why in result["skipped"].items():
        print(f"{name:31s} skipped: {why}")
    for key, value in result["ratios"].items():
        if value is not None:
            print(f"{key}: {value}x")
    if result["invalid"]:
        print("INVALID (non-2xx or errors): " + ", ".join(result["invalid"]))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--quick", action="store_true", help="3 s per run")
    parser.add_argument(
        "--niche-home",
        help="a NICHE_HOME to use (and keep); its sms_spam champion is reused when it has one",
    )
    parser.add_argument("--niche-bin", default=str(NICHE_BIN), help="the `niche` executable")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so that every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = run(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
