"""``check_registry_backend``, the registry's conformance kit, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from niche.registry import Registry
from niche.registry.stores import promotions, tasks
from niche.testing._registry import CHECKS, check_registry_backend


def test_both_backends_keep_the_whole_contract(database_url: str) -> None:
    assert check_registry_backend(database_url) == [name for name, _ in CHECKS]


def test_the_kit_runs_on_a_database_that_holds_other_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    check_registry_backend(url)
    assert check_registry_backend(url, only=["tasks", "promotions"]) == ["tasks", "promotions"]
    with Registry(url) as registry:
        assert len(registry.tasks.all()) > 4  # the kit adds rows and removes none


def test_a_backend_without_compare_and_set_fails_naming_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(promotions.PromotionStore, "_expect", staticmethod(lambda *a: None))
    with pytest.raises(AssertionError, match="a stale compare-and-set raises ConflictError"):
        check_registry_backend(f"sqlite:///{tmp_path / 'cas.db'}", only=["aliases"])


def test_a_backend_that_forgets_its_audit_fails_naming_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forget(session: Any, **event: Any) -> None:
        return None

    monkeypatch.setattr(tasks, "write_event", forget)
    with pytest.raises(AssertionError, match="task changes are audited once each"):
        check_registry_backend(f"sqlite:///{tmp_path / 'audit.db'}", only=["tasks"])


def test_unknown_checks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown check"):
        check_registry_backend(f"sqlite:///{tmp_path / 'x.db'}", only=["nope"])
