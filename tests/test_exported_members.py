"""The public surface of each niche package, checked the way httpx's test_exported_members does.

For every public package or module: ``__all__`` is sorted (ruff's RUF022 order) and unique,
every name in it imports (lazy ``__getattr__`` exports too) and every exported class and
function has its own docstring, and every public name the package defines or re-exports from
niche is in ``__all__``. Some packages also pin the exact names they export, so changing them is
a deliberate edit here. A new top-level package fails :func:`test_every_package_is_listed`
until it is added to ``PUBLIC`` (one line) or ``NOT_PUBLIC``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

import niche

# Each public package or module, with the exact names it exports where those are pinned.
PUBLIC: dict[str, frozenset[str] | None] = {
    "niche": None,
    "niche.cachefile": frozenset({"CacheFile"}),
    "niche.data": None,
    "niche.encoders": None,
    "niche.errors": None,
    "niche.evaluation": frozenset(
        {
            "DEFAULT_THRESHOLDS",
            "CascadePoint",
            "ClassMetrics",
            "Comparison",
            "Evaluation",
            "Latency",
            "McNemar",
            "PairedBootstrap",
            "PairedTest",
            "Prices",
            "Throughput",
            "accuracy",
            "accuracy_ci",
            "bootstrap_ci",
            "cascade_curve",
            "compare",
            "cost_per_1m",
            "cost_per_1m_usd",
            "cost_usd",
            "energy_wh",
            "evaluate",
            "expected_calibration_error",
            "macro_f1",
            "macro_f1_ci",
            "mcnemar",
            "measure_latency",
            "measure_throughput",
            "paired_bootstrap",
            "paired_macro_f1_bootstrap",
            "paired_test",
            "per_class",
            "usage_per_1m",
            "wh_per_query",
        }
    ),
    "niche.gateway": None,
    "niche.monitoring": None,
    # Library calls take a niche.progress.Progress, so its names are public too.
    "niche.progress": None,
    "niche.reports": None,
    "niche.registry": frozenset(
        {
            "UNSET",
            "AliasEventRecord",
            "AuditEventRecord",
            "DatasetRecord",
            "EvaluationRecord",
            "GateRecord",
            "KeyRecord",
            "LocalStore",
            "ModelVersionRecord",
            "PromotionRecord",
            "Registry",
            "TaskRecord",
            "TrafficRecord",
            "StoredTrafficRecord",
        }
    ),
    "niche.settings": None,
    "niche.specialists": frozenset(
        {
            "ENTRY_POINT_GROUP",
            "INPUT_KINDS",
            "FitContext",
            "InputKind",
            "LoadContext",
            "Predictions",
            "Predictor",
            "ProbabilityPredictor",
            "Specialist",
            "SpecialistKind",
            "TextInputs",
            "TextKind",
            "TextSpecialist",
            "Usage",
            "ZeroShot",
            "ZeroShotKind",
            "available_kinds",
            "check_fit_arguments",
            "check_labels",
            "check_text_inputs",
            "get_kind",
            "humanise_label",
            "load_predictor",
        }
    ),
    "niche.testing": None,
    "niche.training": None,
    "niche.workflows": None,
}

# Top-level modules that are no public API: the CLI shell and the ``python -m niche`` entry.
NOT_PUBLIC = frozenset({"__main__", "cli"})


def export_order(name: str) -> tuple[int, list[int | str]]:
    """The order ruff's RUF022 keeps ``__all__`` in: SCREAMING_CASE, CamelCase, the rest.

    Within a group names compare character by character, runs of digits as numbers.
    """
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    # re.split with a group alternates text and digits, so both lists align position by position.
    parts: list[int | str] = [
        int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", name))
    ]
    return group, parts


def defined_names(module: ModuleType) -> set[str]:
    """The public names ``module``'s source binds at top level (``if``/``try`` blocks included).

    A package's ``__init__`` counts what it imports from niche (its re-exports); a plain module
    counts only what it defines, since its imports are for its own use.
    """
    if module.__file__ is None:
        raise ValueError(f"{module.__name__} has no source file")
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    is_package = hasattr(module, "__path__")
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If | ast.Try):
            pending.extend(node.body + node.orelse)
            if isinstance(node, ast.Try):
                pending.extend(node.finalbody)
                for handler in node.handlers:
                    pending.extend(handler.body)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.ImportFrom) and is_package:
            internal = node.level > 0 or (node.module or "").split(".")[0] == "niche"
            if internal:
                names.update(alias.asname or alias.name for alias in node.names)
    return {name for name in names if not name.startswith("_")}


def _own_docstring(obj: object) -> str | None:
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__")
        if not isinstance(doc, str):
            return None
        # dataclass() writes the signature as the docstring of a class that has none.
        if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
            return None
        return doc
    return inspect.getdoc(obj)


def export_problems(module: ModuleType, pinned: frozenset[str] | None = None) -> list[str]:
    """Every way ``module``'s ``__all__`` breaks the rules above, as readable lines."""
    name = module.__name__
    exported = getattr(module, "__all__", None)
    if not isinstance(exported, list) or not all(isinstance(e, str) for e in exported):
        return [f"{name}.__all__ is not a list of names"]
    problems = []
    expected_order = sorted(set(exported), key=export_order)
    if exported != expected_order:
        problems.append(f"{name}.__all__ is not sorted and unique: expected {expected_order}")
    if not module.__doc__:
        problems.append(f"{name} has no module docstring")
    namespace: dict[str, object] = {}
    try:
        exec(f"from {name} import *", namespace)
    except (ImportError, AttributeError) as exc:
        problems.append(f"from {name} import * fails: {exc}")
        return problems
    for member in exported:
        obj = namespace[member]
        if obj is None:
            problems.append(f"{name}.{member} is None")
        if (inspect.isclass(obj) or inspect.isroutine(obj)) and not _own_docstring(obj):
            problems.append(f"{name}.{member} has no docstring")
    missing = sorted(defined_names(module) - set(exported), key=export_order)
    if missing:
        problems.append(f"{name} defines public names missing from __all__: {missing}")
    if pinned is not None and set(exported) != pinned:
        added = sorted(set(exported) - pinned, key=export_order)
        removed = sorted(pinned - set(exported), key=export_order)
        problems.append(f"{name}.__all__ changed: added {added}, removed {removed}")
    return problems


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_exported_members(package: str) -> None:
    assert export_problems(importlib.import_module(package), PUBLIC[package]) == []


def test_every_package_is_listed() -> None:
    found = {info.name for info in pkgutil.iter_modules(niche.__path__)}
    listed = {name.removeprefix("niche.") for name in PUBLIC} | NOT_PUBLIC
    assert sorted(found - listed) == [], "add each new package to PUBLIC or NOT_PUBLIC"


def test_the_export_order_is_ruffs() -> None:
    # What `ruff check --select RUF022 --fix` made of these names (ruff 0.17).
    ruff_sorted = ["A1", "AB2", "AB10", "ZA", "ZZ", "Z_A", "A", "Ab", "Zz", "__version__"]
    ruff_sorted += ["aB", "a_b", "aa", "ab", "zz"]
    assert sorted(reversed(ruff_sorted), key=export_order) == ruff_sorted


def test_each_broken_rule_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "broken_exports"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from dataclasses import dataclass
            from typing import TYPE_CHECKING

            from niche.errors import NicheError

            __all__ = ["b_documented", "Undocumented", "Record", "lazy", "gone", "nothing"]

            nothing = None

            if TYPE_CHECKING:
                from niche.settings import Settings

            @dataclass
            class Record:
                field: int

            class Undocumented:
                pass

            def b_documented() -> None:
                """Documented."""

            def unlisted() -> None:
                """Defined here, but not in __all__."""

            def __getattr__(name: str) -> object:
                if name == "lazy":
                    return 1
                raise AttributeError(name)
            '''
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("broken_exports")
    assert export_problems(module) == [
        "broken_exports.__all__ is not sorted and unique: expected "
        "['Record', 'Undocumented', 'b_documented', 'gone', 'lazy', 'nothing']",
        "broken_exports has no module docstring",
        "from broken_exports import * fails: gone",
    ]
    exported = ["Record", "Undocumented", "b_documented", "lazy", "nothing"]
    monkeypatch.setattr(module, "__all__", exported)
    monkeypatch.setattr(module, "__doc__", "Documented.")
    assert export_problems(module, frozenset({"Record", "b_documented", "lost"})) == [
        "broken_exports.Record has no docstring",
        "broken_exports.Undocumented has no docstring",
        "broken_exports.nothing is None",
        "broken_exports defines public names missing from __all__: "
        "['NicheError', 'Settings', 'unlisted']",
        "broken_exports.__all__ changed: added ['Undocumented', 'lazy', 'nothing'], removed ['lost']",
    ]
