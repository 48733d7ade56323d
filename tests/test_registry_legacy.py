"""The registry's old flat names still work, as delegations to the stores (issue 8)."""

from __future__ import annotations

import inspect

import niche.registry.store
from niche.data import Rows, curate
from niche.registry import Registry, TrafficRecord
from niche.registry.legacy import LegacyNames
from niche.registry.tasks import TaskSpec

OLD_NAMES = [
    "create_task",
    "ensure_task",
    "get_task",
    "list_tasks",
    "update_task",
    "register_dataset",
    "get_dataset",
    "list_datasets",
    "register_model",
    "get_model",
    "list_models",
    "lineage",
    "referenced_digests",
    "record_evaluation",
    "list_evaluations",
    "get_alias",
    "set_alias",
    "list_aliases",
    "alias_history",
    "record_gate",
    "gate_decisions",
    "create_key",
    "verify_key",
    "list_keys",
    "revoke_key",
    "add_spend",
    "record_traffic",
    "list_traffic",
    "count_traffic",
    "aliased_models",
]


def test_every_old_name_is_still_there() -> None:
    assert all(callable(getattr(Registry, name, None)) for name in OLD_NAMES)
    # Only the facade's own method (it spans two stores) is not a legacy delegation.
    assert set(OLD_NAMES) - set(vars(LegacyNames)) == {"referenced_digests"}
    old_exports = [
        "KEY_SCOPES",
        "UNSET",
        "AliasEventRecord",
        "DatasetRecord",
        "EvaluationRecord",
        "GateRecord",
        "KeyRecord",
        "ModelVersionRecord",
        "Registry",
        "StoredTrafficRecord",
        "TaskRecord",
        "TrafficRecord",
        "parse_since",
        "SECRET_PREFIX",
        "KEY_PREFIX_CHARS",
        "MIN_PREFIX",
    ]
    assert [n for n in old_exports if not hasattr(niche.registry.store, n)] == []
    assert "actor" in inspect.signature(Registry.set_alias).parameters


def test_the_old_names_reach_the_same_rows_as_the_stores(registry: Registry) -> None:
    spec = TaskSpec(name="tickets", labels=["a", "b"])
    assert registry.create_task(spec) == registry.tasks.get("tickets")
    assert registry.ensure_task(spec) == registry.get_task("tickets")
    assert registry.update_task("tickets", domain="x").spec.domain == "x"
    assert registry.list_tasks() == registry.tasks.all()
    model = registry.register_model(
        "tickets",
        kind="text",
        artifact_digest="d",
        artifact_uri="file:///d",
        dataset_fingerprint="f" * 64,
        lineage={},
    )
    assert registry.get_model("tickets", 1) == model == registry.list_models("tickets")[0]
    assert registry.lineage("tickets", 1) == registry.models.lineage("tickets", 1)
    evaluation = registry.record_evaluation(
        "tickets", 1, dataset_fingerprint="f" * 64, split="test", metrics={"accuracy": 1.0}
    )
    assert registry.list_evaluations("tickets", 1) == [evaluation]
    gate = registry.record_gate("tickets", 1, alias="champion", passed=True, checks=[], actor="a")
    assert registry.gate_decisions("tickets") == [gate]
    event = registry.set_alias("tickets", "champion", 1, actor="a", expected_current=None)
    assert registry.alias_history("tickets") == [event]
    assert registry.list_aliases("tickets") == {"champion": 1}
    assert registry.get_alias("tickets", "champion") == model
    assert registry.aliased_models() == {"tickets": {"champion": model}}
    assert registry.referenced_digests() == {"d"}
    key, secret = registry.create_key(scope="inference", budget_usd=1.0)
    assert registry.verify_key(secret) == key and registry.list_keys() == [key]
    assert registry.add_spend(key.id, 0.5).spent_usd == 0.5
    assert registry.revoke_key(key.prefix).revoked
    stored = registry.record_traffic(
        [TrafficRecord(model="tickets", route="specialist", input="x", latency_ms=1, status=200)]
    )
    assert stored == 1 == registry.count_traffic() == len(registry.list_traffic(limit=5))
    rows = Rows(texts=[f"text {i}" for i in range(6)], labels=["a", "b"] * 3, source="mem")
    version = curate(rows, test_size=0.5, seed=0, source="mem")
    dataset = registry.register_dataset(version, uri="/data/mem")
    assert dataset.uri == "/data/mem"  # the given path, as before (no artifact store)
    assert registry.get_dataset(version.fingerprint) == dataset == registry.list_datasets()[0]
    assert [e.action for e in registry.audit.events()] == [
        "task.created",
        "task.updated",
        "model.registered",
        "gate.decided",
        "alias.moved",
        "key.created",
        "key.revoked",
        "dataset.registered",
    ]
