"""``check_registry_backend``: the registry's contract, checked on a database URL.

    >>> from niche.testing import check_registry_backend
    >>> check_registry_backend("postgresql+psycopg://niche@db/niche_test")
    ['migrations', 'tasks', 'datasets', 'models', 'aliases', 'promotions', ...]

In the spirit of scikit-learn's ``check_estimator``: every rule the stores promise (tasks,
dataset and model registration, compare-and-set aliases, the promotion rule, keys, traffic,
audit events) is exercised on a real database, and a broken one fails with an
:class:`AssertionError` naming the rule. Names are made unique per run, so the database may
hold other data; the kit adds rows to it and removes none.
"""

from __future__ import annotations

import pickle
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["check_registry_backend"]

_START = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)


class _StepClock:
    """One second later at each reading, so every stored time is known exactly."""

    def __init__(self) -> None:
        self.now = _START - timedelta(seconds=1)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass(frozen=True)
class _Decision:
    """A gate result as :meth:`PromotionStore.promote` takes it."""

    passed: bool
    checks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Run:
    registry: Any
    clock: _StepClock
    prefix: str
    url: str

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"


def _rule(run: _Run, rule: str, ok: bool, detail: str = "") -> None:
    if not ok:
        raise AssertionError(
            f"registry backend {run.url}: {rule}" + (f" ({detail})" if detail else "")
        )


@contextmanager
def _raises(run: _Run, rule: str, error: type[BaseException]) -> Iterator[None]:
    try:
        yield
    except error:
        return
    except Exception as exc:  # the wrong error is the broken rule, reported as such
        raise AssertionError(
            f"registry backend {run.url}: {rule} (raised {type(exc).__name__}: {exc})"
        ) from exc
    raise AssertionError(f"registry backend {run.url}: {rule} (nothing was raised)")


def _model(run: _Run, task: str, digest: str = "0" * 64) -> Any:
    return run.registry.models.register(
        task,
        kind="text",
        artifact_digest=digest,
        artifact_uri=f"file:///kit/{digest}",
        dataset_fingerprint="f" * 64,
        lineage={"kit": True},
    )


def _events(run: _Run, task: str) -> list[Any]:
    return list(run.registry.audit.events(task))


# -- the checks, in order ----------------------------------------------------------------------


def _migrations(run: _Run) -> None:
    from niche.registry.db import head_revision

    head = head_revision()
    _rule(run, "upgrade() returns the head revision", run.registry.upgrade() == head)
    _rule(run, "upgrade() twice is a no-op", run.registry.upgrade() == head)


def _tasks(run: _Run) -> None:
    from niche.errors import AlreadyExistsError, TaskNotFoundError, ValidationError
    from niche.registry.tasks import TaskSpec

    tasks = run.registry.tasks
    name, other = run.name("tickets"), run.name("alerts")
    spec = TaskSpec(name=name, labels=["billing", "outage"])
    created = tasks.create(spec)
    at = run.clock.now
    _rule(run, "tasks.create stores the spec", created.spec == spec)
    _rule(run, "tasks.create times come from the clock", created.created_at == at)
    _rule(run, "tasks.get returns what create returned", tasks.get(name) == created)
    with _raises(run, "tasks.create refuses a taken name", AlreadyExistsError):
        tasks.create(TaskSpec(name=name, domain="other"))
    again = tasks.ensure(TaskSpec(name=name, domain="ignored"))
    _rule(run, "tasks.ensure returns an existing task unchanged", again == created)
    tasks.ensure(TaskSpec(name=other))
    names = [t.name for t in tasks.all() if t.name.startswith(run.prefix)]
    _rule(run, "tasks.all lists every task by name", names == sorted([name, other]), str(names))
    updated = tasks.update(name, domain="support", sla={"latency_p95_ms": 20})
    _rule(run, "tasks.update changes the given fields", updated.spec.domain == "support")
    _rule(run, "tasks.update merges partial dicts", updated.spec.sla.latency_p95_ms == 20)
    _rule(run, "tasks.update keeps created_at", updated.created_at == created.created_at)
    _rule(run, "tasks.update sets updated_at from the clock", updated.updated_at == run.clock.now)
    with _raises(run, "tasks.update refuses a rename", ValidationError):
        tasks.update(name, name=other)
    with _raises(run, "tasks.get of an unknown task raises TaskNotFoundError", TaskNotFoundError):
        tasks.get(run.name("missing"))
    actions = [e.action for e in _events(run, name)]
    _rule(
        run,
        "task changes are audited once each (an ensure of an existing task writes nothing)",
        actions == ["task.created", "task.updated"],
        str(actions),
    )
    event = _events(run, name)[-1]
    _rule(run, "audit events carry the registry's actor", event.actor == "kit:check")
    _rule(run, "audit events carry the clock's time", event.at == updated.updated_at)
    _rule(
        run,
        "task.updated lists the changed fields",
        sorted(event.detail.get("changed", {})) == ["domain", "sla"],
        str(event.detail),
    )


def _datasets(run: _Run) -> None:
    from niche.data import Rows, curate
    from niche.errors import DatasetNotFoundError

    texts = [f"{run.prefix} invoice {i}" for i in range(4)] + [
        f"{run.prefix} outage {i}" for i in range(4)
    ]
    rows = Rows(texts=tuple(texts), labels=("billing",) * 4 + ("outage",) * 4, source="kit")
    version = curate(rows, test_size=0.5, seed=0, source=run.prefix)
    datasets = run.registry.datasets
    record = datasets.register(version)
    _rule(run, "datasets.register keeps the fingerprint", record.fingerprint == version.fingerprint)
    _rule(run, "datasets.register records where the files are", bool(record.uri))
    _rule(
        run,
        "datasets.get finds a version by prefix",
        datasets.get(version.fingerprint[:8]) == record,
    )
    _rule(run, "datasets.register is idempotent", datasets.register(version) == record)
    loaded = datasets.load(version.fingerprint)
    _rule(
        run,
        "datasets.load returns the registered rows",
        loaded.fingerprint == version.fingerprint
        and loaded.splits["train"].texts == version.splits["train"].texts,
    )
    digests = datasets.artifact_digests()
    _rule(
        run,
        "referenced_digests keeps every dataset's files",
        bool(digests) and digests <= run.registry.referenced_digests(),
    )
    with _raises(run, "datasets.get refuses a too-short prefix", DatasetNotFoundError):
        datasets.get("abc")
    registered = [e for e in run.registry.audit.events() if e.action == "dataset.registered"]
    mine = [e for e in registered if e.detail.get("fingerprint") == version.fingerprint]
    _rule(run, "a dataset registration is audited once", len(mine) == 1, str(len(mine)))


def _models(run: _Run) -> None:
    from niche.errors import ModelNotFoundError

    task = run.name("models")
    run.registry.tasks.create(_spec(task))
    versions = [_model(run, task, f"{i}" * 64).version for i in range(3)]
    _rule(run, "model versions are dense per task", versions == [1, 2, 3], str(versions))
    models = run.registry.models
    second = models.get(task, 2)
    _rule(run, "models.get reads 2, '2' and 'v2' alike", models.get(task, "v2") == second)
    listed = [m.version for m in models.all(task)]
    _rule(run, "models.all lists a task's versions in order", listed == [1, 2, 3], str(listed))
    lineage = models.lineage(task, 1)
    _rule(run, "models.lineage starts at the model", lineage["model"]["version"] == 1)
    with _raises(
        run, "models.get of an unknown version raises ModelNotFoundError", ModelNotFoundError
    ):
        models.get(task, 9)
    subjects = [e.subject for e in _events(run, task) if e.action == "model.registered"]
    _rule(run, "model registrations are audited", subjects == ["v1", "v2", "v3"], str(subjects))


def _spec(name: str) -> Any:
    from niche.registry.tasks import TaskSpec

    return TaskSpec(name=name, labels=["a", "b"])


def _aliases(run: _Run) -> None:
    from niche.errors import ConflictError

    task = run.name("aliases")
    run.registry.tasks.create(_spec(task))
    for i in range(2):
        _model(run, task, f"{i}" * 64)
    promotions = run.registry.promotions
    promotions.move(task, "champion", 1, reason="first", expected_current=None)
    before = _events(run, task)
    with _raises(run, "a stale compare-and-set raises ConflictError", ConflictError):
        promotions.move(task, "champion", 2, expected_current=None)
    _rule(
        run, "a refused compare-and-set moves nothing", promotions.aliases(task) == {"champion": 1}
    )
    _rule(run, "a refused compare-and-set writes no audit event", _events(run, task) == before)
    promotions.move(task, "champion", 2, reason="second", expected_current=1)
    chain = [(e.from_version, e.to_version) for e in promotions.history(task)]
    _rule(run, "alias history is a chain", chain == [(None, 1), (1, 2)], str(chain))
    champion = promotions.get(task, "champion")
    _rule(run, "promotions.get follows the alias", champion is not None and champion.version == 2)
    served = promotions.served().get(task, {})
    _rule(
        run,
        "promotions.served lists every alias",
        {a: m.version for a, m in served.items()} == {"champion": 2},
    )
    moved = [e.detail for e in _events(run, task) if e.action == "alias.moved"]
    _rule(
        run,
        "alias moves are audited with from, to and reason",
        [(d["from_version"], d["to_version"], d["reason"]) for d in moved]
        == [(None, 1, "first"), (1, 2, "second")],
        str(moved),
    )


def _promotions(run: _Run) -> None:
    from niche.errors import GateRefusedError, ValidationError

    task = run.name("promotions")
    run.registry.tasks.create(_spec(task))
    for i in range(3):
        _model(run, task, f"{i}" * 64)
    promotions = run.registry.promotions
    passed = promotions.promote(task, "champion", 1, decision=_Decision(True))
    _rule(
        run,
        "a passed gate moves the alias",
        passed.moved and promotions.aliases(task) == {"champion": 1},
    )
    refused = promotions.promote(task, "champion", 2, decision=_Decision(False))
    _rule(
        run,
        "a failed gate moves nothing",
        not refused.moved and promotions.aliases(task) == {"champion": 1},
    )
    _rule(
        run, "a failed gate is stored", [g.passed for g in promotions.gates(task)] == [True, False]
    )
    with _raises(
        run, "a forced promotion without a reason raises ValidationError", ValidationError
    ):
        promotions.promote(task, "champion", 2, force=True)
    with _raises(run, "the champion moves by hand only with a passed gate", GateRefusedError):
        promotions.promote(task, "champion", 3, why="by hand")
    forced = promotions.promote(task, "champion", 3, force=True, why="hotfix")
    _rule(run, "a forced move with a reason moves", forced.moved and forced.forced)
    _rule(run, "a forced move stores a forced gate", forced.gate is not None and forced.gate.forced)
    already = promotions.promote(task, "champion", 3, decision=_Decision(True))
    _rule(
        run,
        "a version holding the alias already moves nothing",
        already.already and not already.moved,
    )
    actions = [e.action for e in _events(run, task) if e.action in ("gate.decided", "alias.moved")]
    expected = [
        "gate.decided",
        "alias.moved",
        "gate.decided",
        "gate.decided",
        "alias.moved",
        "gate.decided",
    ]
    _rule(run, "each promotion audits its gate and its move", actions == expected, str(actions))
    with _raises(run, "the challenger moves by hand only with a passed gate", GateRefusedError):
        promotions.promote(task, "challenger", 2, why="canary")
    run.registry.tasks.update(task, sla={"min_quality": 0.5})
    with _raises(run, "a gate passed under an older spec does not count", GateRefusedError):
        promotions.promote(task, "champion", 1, why="rollback")


def _keys(run: _Run) -> None:
    from niche.errors import NotFoundError

    keys = run.registry.keys
    record, secret = keys.create(scope="inference", budget_usd=1.0, name=run.name("key"))
    _rule(run, "keys.verify finds a key by its secret", keys.verify(secret) == record)
    _rule(run, "keys.verify refuses a wrong secret", keys.verify(secret + "x") is None)
    _rule(run, "a key's record never holds its secret", secret not in str(record.to_dict()))
    keys.add_spend(record.id, 0.25)
    spent = keys.add_spend(record.id, 0.5)
    _rule(run, "keys.add_spend adds up", spent.spent_usd == 0.75, str(spent.spent_usd))
    revoked = keys.revoke(record.prefix)
    _rule(run, "a revoked key no longer verifies", revoked.revoked and keys.verify(secret) is None)
    _rule(
        run,
        "revoking twice keeps the first time",
        keys.revoke(record.id).revoked_at == revoked.revoked_at,
    )
    with _raises(run, "spending on an unknown key raises NotFoundError", NotFoundError):
        keys.add_spend(-1, 0.1)
    events = [e for e in run.registry.audit.events() if e.subject == record.prefix]
    actions = [e.action for e in events if e.detail.get("id") == record.id]
    _rule(
        run,
        "key creation and revocation are audited once each",
        actions == ["key.created", "key.revoked"],
        str(actions),
    )
    _rule(
        run,
        "no audit event holds a key's secret",
        all(secret not in str(e.to_dict()) for e in events),
    )


def _traffic(run: _Run) -> None:
    from niche.errors import ValidationError
    from niche.registry.records import TrafficRecord

    task = run.name("traffic")
    traffic = run.registry.traffic
    start = run.clock.now
    records = [
        TrafficRecord(
            task=task,
            model=task,
            route="specialist",
            input=f"text {i}",
            latency_ms=1.0,
            status=200,
            at=start + timedelta(seconds=i),
        )
        for i in range(5)
    ]
    _rule(run, "traffic.record returns how many it stored", traffic.record(records) == 5)
    _rule(run, "traffic.count counts a task's records", traffic.count(task) == 5)
    since = start + timedelta(seconds=3)
    _rule(run, "traffic.count filters by time", traffic.count(task, since=since) == 2)
    newest = [r.input for r in traffic.query(task, limit=2)]
    _rule(
        run,
        "traffic.query with a limit gives the newest, oldest first",
        newest == ["text 3", "text 4"],
        str(newest),
    )
    bad = TrafficRecord(
        task=task, model="", route="specialist", input="x", latency_ms=1.0, status=200
    )
    with _raises(run, "a bad traffic record is refused", ValidationError):
        traffic.record([records[0], bad])
    _rule(run, "a refused traffic batch stores none of it", traffic.count(task) == 5)


def _pickling(run: _Run) -> None:
    task = run.name("pickled")
    created = run.registry.tasks.create(_spec(task))
    copy = pickle.loads(pickle.dumps(run.registry))
    try:
        _rule(run, "a pickled registry reads the same rows", copy.tasks.get(task) == created)
    finally:
        copy.close()


CHECKS: tuple[tuple[str, Callable[[_Run], None]], ...] = (
    ("migrations", _migrations),
    ("tasks", _tasks),
    ("datasets", _datasets),
    ("models", _models),
    ("aliases", _aliases),
    ("promotions", _promotions),
    ("keys", _keys),
    ("traffic", _traffic),
    ("pickling", _pickling),
)


def check_registry_backend(url: str, *, only: Sequence[str] | None = None) -> list[str]:
    """Check the registry's contract on the database at ``url``; return the checks run.

    Builds a :class:`~niche.registry.Registry` on ``url`` (with its own clock, actor and a
    temporary artifact store), migrates it and exercises every store. A broken rule raises
    :class:`AssertionError` naming it. ``only`` runs some of the checks (by name).

        >>> check_registry_backend("sqlite:////tmp/kit.db")
        ['migrations', 'tasks', 'datasets', 'models', 'aliases', 'promotions', 'keys', ...]
    """
    from niche.registry import Registry
    from niche.registry.artifacts import ArtifactStore
    from niche.registry.db import mask_url

    names = [name for name, _ in CHECKS]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(names)}")
    chosen = [(name, check) for name, check in CHECKS if only is None or name in only]
    with tempfile.TemporaryDirectory(prefix="niche-kit-") as scratch:
        artifacts = ArtifactStore(Path(scratch) / "artifacts", cache_dir=Path(scratch) / "cache")
        clock = _StepClock()
        with Registry(url, clock=clock, actor="kit:check", artifacts=artifacts) as registry:
            run = _Run(registry, clock, f"kit-{uuid.uuid4().hex[:8]}", mask_url(url))
            for _, check in chosen:
                check(run)
    return [name for name, _ in chosen]
