"""``check_predictor``: the conformance rules every specialist kind must keep.

In the spirit of scikit-learn's ``check_estimator``: one function a kind's author (or niche's
own suite) runs on a fitted predictor; each broken rule is a :class:`PredictorCheckError`
whose message names the rule.

    >>> check_predictor(lambda: TextSpecialist.load(path, encoder), test_texts,
    ...                 context=LoadContext(settings, encoder=encoder), batch_atol=0.05)
    (<Rule.PROTOCOL: 'is a Predictor'>, ...)
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from niche.errors import NicheError, ValidationError
from niche.specialists import (
    INPUT_KINDS,
    LoadContext,
    Predictions,
    Predictor,
    SpecialistKind,
    Usage,
    get_kind,
)
from niche.testing._rebuild import RebuildError, RebuildSpec
from niche.testing._rules import SAMPLE_INPUTS, WRONG_INPUTS, PredictorCheckError, Rule

__all__ = ["check_predictor"]


def check_predictor(
    make: Callable[[], Predictor],
    inputs: Sequence[Any] | None = None,
    *,
    context: LoadContext | None = None,
    atol: float = 1e-6,
    batch_atol: float | None = None,
    threads: int = 4,
    rebuild: Literal["subprocess", "pickle"] = "subprocess",
    timeout_s: float = 300.0,
) -> tuple[Rule, ...]:
    """Check the predictor ``make()`` builds against every :class:`Rule`; return them all.

    ``make`` builds a fitted predictor (e.g. ``lambda: get_kind("text").load(path, ctx)``);
    it is called twice, so the thread check gets a fresh one (lazy state included).
    ``inputs`` (at least 2; default :data:`SAMPLE_INPUTS` of the kind's input kind) are what
    it predicts. ``context`` is what its kind's ``load`` gets; its settings are all another
    process gets to rebuild the predictor from (``rebuild="subprocess"``, the default, runs a
    fresh Python with this one's ``sys.path``; ``"pickle"`` rebuilds in this process from a
    pickle round trip of the spec).

    The same inputs with the same batch-mates (in any order, from any thread, after save and
    load) must give the same labels, and confidences within ``atol``. ``batch_atol``
    (default ``atol``) bounds what may move with an input's batch-mates: an input alone vs
    inside the batch, and a rebuild in another process (whose embedding cache, if any, may
    hold vectors computed in other batches). Where both sides carry probabilities, whole
    rows are compared, so a near tie may change its label within the tolerance. niche's
    default static int8 encoder gives a text the same vector in any batch (``1e-6`` holds);
    dynamic int8 scales activations per batch tensor: on BANKING77 rows an int8 text
    specialist's confidences moved by up to 0.03 alone vs in a batch of 16 (0.06 in a batch
    of 96), zero-shot's (cosines / 0.05) by up to 0.05 (0.16), so it needs
    ``batch_atol=0.05`` and ``0.1`` on 16 rows. ``timeout_s`` bounds the threads and the
    rebuild.

    >>> check_predictor(lambda: get_kind("zero-shot").fit([], labels, FitContext(encoder=enc)))
    """
    if not callable(make):
        raise ValidationError(
            f"make must be a callable that builds a fitted predictor, not {type(make).__name__}",
            param="make",
        )
    if threads < 2:
        raise ValidationError(f"threads must be at least 2, got {threads}", param="threads")
    if rebuild not in ("subprocess", "pickle"):
        raise ValidationError(f"rebuild must be 'subprocess' or 'pickle', got {rebuild!r}")
    checker = _Checker(
        make,
        LoadContext() if context is None else context,
        atol=atol,
        batch_atol=atol if batch_atol is None else batch_atol,
    )
    with tempfile.TemporaryDirectory(prefix="niche-check-") as workdir:
        checker.run(inputs, Path(workdir), threads=threads, rebuild=rebuild, timeout_s=timeout_s)
    return tuple(checker.passed)


class _Checker:
    def __init__(
        self, make: Callable[[], Predictor], context: LoadContext, *, atol: float, batch_atol: float
    ) -> None:
        self.make = make
        self.context = context
        self.atol = atol
        self.batch_atol = batch_atol
        self.kind_name = "?"
        self.passed: list[Rule] = []

    def fail(self, rule: Rule, detail: str) -> PredictorCheckError:
        return PredictorCheckError(rule, self.kind_name, detail)

    @contextmanager
    def rule(self, rule: Rule) -> Iterator[None]:
        """Run one rule: an unexpected exception inside it breaks that rule."""
        try:
            yield
        except PredictorCheckError:
            raise
        except Exception as exc:  # whatever the predictor raised, the rule is what broke
            raise self.fail(rule, f"raised {type(exc).__name__}: {exc}") from exc
        self.passed.append(rule)

    def run(
        self,
        inputs: Sequence[Any] | None,
        workdir: Path,
        *,
        threads: int,
        rebuild: Literal["subprocess", "pickle"],
        timeout_s: float,
    ) -> None:
        with self.rule(Rule.PROTOCOL):
            predictor = self.make()
            self.check_protocol(predictor)
        with self.rule(Rule.REGISTERED):
            kind = self.check_registered(predictor)
        batch = self.inputs_for(kind, inputs)
        with self.rule(Rule.INPUT_TYPES):
            self.check_input_types(predictor, kind)
        with self.rule(Rule.ONE_PER_INPUT):
            predictions = predictor.predict(batch)
            self.check_shape(Rule.ONE_PER_INPUT, predictions, len(batch))
        with self.rule(Rule.EMPTY):
            self.check_empty(predictor)
        with self.rule(Rule.PROBABILITIES):
            self.check_probabilities(predictor, predictions)
        with self.rule(Rule.USAGE):
            self.check_usage(predictions)
        with self.rule(Rule.DETERMINISTIC):
            again = predictor.predict(batch)
            self.same(Rule.DETERMINISTIC, predictions, again, self.atol, "a second call")
        with self.rule(Rule.IN_ORDER):
            self.check_in_order(predictor, batch, predictions)
        with self.rule(Rule.ALONE):
            self.check_alone(predictor, batch, predictions)
        directory = workdir / "saved"
        with self.rule(Rule.SAVE_LOAD):
            self.check_save_load(predictor, kind, directory, batch, predictions)
        with self.rule(Rule.THREADS):
            self.check_threads(batch, threads, timeout_s)
        with self.rule(Rule.REBUILD):
            spec = RebuildSpec(
                kind=predictor.kind,
                directory=str(directory),
                settings=self.context.settings,
                embedding_cache=self.context.embedding_cache,
                inputs=list(batch),
            )
            rebuilt = self.rebuilt(spec, rebuild, timeout_s)
            self.same(Rule.REBUILD, predictions, rebuilt, self.batch_atol, f"a {rebuild} rebuild")

    # -- the rules ---------------------------------------------------------------------------

    def check_protocol(self, predictor: object) -> None:
        kind = getattr(predictor, "kind", None)
        if isinstance(kind, str):
            self.kind_name = kind
        if not isinstance(predictor, Predictor):
            raise self.fail(
                Rule.PROTOCOL, f"{type(predictor).__name__} lacks kind, label_set or predict"
            )
        if not isinstance(kind, str) or not kind:
            raise self.fail(Rule.PROTOCOL, f"kind must be a non-empty str, got {kind!r}")
        label_set = predictor.label_set
        if not isinstance(label_set, list) or not all(isinstance(x, str) for x in label_set):
            raise self.fail(Rule.PROTOCOL, f"label_set must be a list of str, got {label_set!r}")
        if len(set(label_set)) != len(label_set) or len(label_set) < 2:
            raise self.fail(
                Rule.PROTOCOL, f"label_set must hold 2 or more distinct labels: {label_set!r}"
            )

    def check_registered(self, predictor: Predictor) -> SpecialistKind:
        try:
            kind = get_kind(predictor.kind)
        except NicheError as exc:
            raise self.fail(Rule.REGISTERED, str(exc)) from exc
        if kind.input_kind not in INPUT_KINDS:
            raise self.fail(
                Rule.REGISTERED, f"input kind {kind.input_kind!r} is not one of {INPUT_KINDS}"
            )
        return kind

    def inputs_for(self, kind: SpecialistKind, inputs: Sequence[Any] | None) -> list[Any]:
        if inputs is None:
            if kind.input_kind not in SAMPLE_INPUTS:
                raise ValidationError(
                    f"no sample inputs for {kind.input_kind} kinds: pass inputs", param="inputs"
                )
            inputs = SAMPLE_INPUTS[kind.input_kind]
        batch = list(kind.check_inputs(inputs))
        if len(batch) < 2:
            raise ValidationError("check_predictor needs at least 2 inputs", param="inputs")
        return batch

    def check_input_types(self, predictor: Predictor, kind: SpecialistKind) -> None:
        for description, wrong in WRONG_INPUTS.get(kind.input_kind, []):
            try:
                predictor.predict(wrong)
            except ValidationError as exc:
                message = str(exc)
                if predictor.kind not in message or kind.input_kind not in message:
                    raise self.fail(
                        Rule.INPUT_TYPES,
                        f"the error for {description} must name the kind {predictor.kind!r} "
                        f"and its input kind {kind.input_kind!r}: {message!r}",
                    ) from exc
            except Exception as exc:  # any other error type breaks the rule
                raise self.fail(
                    Rule.INPUT_TYPES,
                    f"{description} raised {type(exc).__name__}, not niche's ValidationError",
                ) from exc
            else:
                raise self.fail(Rule.INPUT_TYPES, f"predict accepted {description}")

    def check_in_order(
        self, predictor: Predictor, batch: list[Any], predictions: Predictions
    ) -> None:
        reverse = predictor.predict(batch[::-1])
        self.check_shape(Rule.IN_ORDER, reverse, len(batch))
        unreversed = Predictions(
            labels=list(reverse.labels)[::-1],
            confidences=np.asarray(reverse.confidences)[::-1],
            label_set=list(reverse.label_set),
            probabilities=None
            if reverse.probabilities is None
            else np.asarray(reverse.probabilities)[::-1],
        )
        # The same batch-mates in another order: only the order of the answers may change.
        self.same(Rule.IN_ORDER, predictions, unreversed, self.atol, "reversed inputs")

    def check_shape(self, rule: Rule, predictions: object, n: int) -> None:
        if not isinstance(predictions, Predictions):
            raise self.fail(rule, f"predict returned {type(predictions).__name__}, not Predictions")
        if len(predictions.labels) != n:
            raise self.fail(rule, f"{n} inputs gave {len(predictions.labels)} labels")
        confidences = predictions.confidences
        if not isinstance(confidences, np.ndarray) or confidences.shape != (n,):
            shape = getattr(confidences, "shape", type(confidences).__name__)
            raise self.fail(rule, f"{n} inputs gave confidences of shape {shape}, not ({n},)")
        if not all(isinstance(label, str) for label in predictions.labels):
            raise self.fail(rule, "labels must be str")

    def check_empty(self, predictor: Predictor) -> None:
        empty = predictor.predict([])
        self.check_shape(Rule.EMPTY, empty, 0)
        if empty.probabilities is not None and empty.probabilities.shape[0] != 0:
            raise self.fail(Rule.EMPTY, f"probabilities of shape {empty.probabilities.shape}")

    def check_probabilities(self, predictor: Predictor, predictions: Predictions) -> None:
        rule = Rule.PROBABILITIES
        label_set = predictor.label_set
        confidences = np.asarray(predictions.confidences, dtype=np.float64)
        if not np.all(np.isfinite(confidences)) or np.any((confidences < 0) | (confidences > 1)):
            raise self.fail(rule, f"confidences outside [0, 1]: {confidences.tolist()}")
        strangers = sorted(set(predictions.labels) - set(label_set))
        if strangers:
            raise self.fail(rule, f"labels {strangers} are not in the label set {label_set}")
        if predictions.probabilities is None:
            return
        if predictions.label_set != label_set:
            raise self.fail(rule, f"predictions are over {predictions.label_set}, not {label_set}")
        matrix = np.asarray(predictions.probabilities, dtype=np.float64)
        if matrix.shape != (len(predictions), len(label_set)):
            raise self.fail(rule, f"probabilities of shape {matrix.shape}")
        if np.any(matrix < -self.atol) or not np.allclose(matrix.sum(axis=1), 1.0, atol=1e-6):
            raise self.fail(rule, "probability rows must be non-negative and sum to 1")
        column = {label: j for j, label in enumerate(label_set)}
        of_label = matrix[np.arange(len(predictions)), [column[x] for x in predictions.labels]]
        gap = np.abs(of_label - confidences)
        if np.any(gap > self.atol):
            i = int(gap.argmax())
            raise self.fail(
                rule,
                f"input {i}: confidence {confidences[i]} but P({predictions.labels[i]!r}) = "
                f"{of_label[i]}",
            )

    def check_usage(self, predictions: Predictions) -> None:
        usage = predictions.usage
        if not isinstance(usage, Usage):
            raise self.fail(Rule.USAGE, f"predictions.usage is {usage!r}, not a Usage")
        if not (math.isfinite(usage.compute_s) and usage.compute_s >= 0):
            raise self.fail(Rule.USAGE, f"compute_s must be finite and >= 0: {usage.compute_s}")
        for name in ("input_tokens", "output_tokens"):
            tokens = getattr(usage, name)
            if tokens is not None and (not isinstance(tokens, int) or tokens < 0):
                raise self.fail(Rule.USAGE, f"{name} must be None or an int >= 0: {tokens!r}")

    def check_alone(self, predictor: Predictor, batch: list[Any], predictions: Predictions) -> None:
        for i, one in enumerate(batch):
            alone = predictor.predict([one])
            self.check_shape(Rule.ALONE, alone, 1)
            self.same(Rule.ALONE, _row(predictions, i), alone, self.batch_atol, "alone", rows=[i])

    def check_save_load(
        self,
        predictor: Predictor,
        kind: SpecialistKind,
        directory: Path,
        batch: list[Any],
        predictions: Predictions,
    ) -> None:
        rule = Rule.SAVE_LOAD
        save = getattr(predictor, "save", None)
        if not callable(save):
            raise self.fail(rule, f"{type(predictor).__name__} has no save(directory)")
        save(directory)
        loaded = kind.load(directory, self.context)
        if getattr(loaded, "kind", None) != predictor.kind:
            raise self.fail(rule, f"the loaded predictor is of kind {loaded.kind!r}")
        if list(loaded.label_set) != list(predictor.label_set):
            raise self.fail(
                rule, f"the label set {predictor.label_set} came back as {loaded.label_set}"
            )
        self.same(rule, predictions, loaded.predict(batch), self.atol, "the loaded predictor")

    def check_threads(self, batch: list[Any], threads: int, timeout_s: float) -> None:
        rule = Rule.THREADS
        # A fresh predictor: lazy state built on first use must be safe to build concurrently.
        predictor = self.make()
        # Each thread its own order of the inputs, so a shared scratch buffer shows up.
        orders = [batch[i % len(batch) :] + batch[: i % len(batch)] for i in range(threads)]
        results: list[list[Predictions]] = [[] for _ in range(threads)]
        errors: list[BaseException] = []
        start = threading.Barrier(threads)

        def work(i: int) -> None:
            try:
                start.wait()
                results[i].extend(predictor.predict(orders[i]) for _ in range(2))
            except BaseException as exc:  # reported below, from the checking thread
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=timeout_s)
        if errors:
            raise self.fail(rule, f"a thread raised {type(errors[0]).__name__}: {errors[0]}")
        if any(worker.is_alive() for worker in workers):
            raise self.fail(rule, f"a thread did not finish within {timeout_s} s")
        for i, order in enumerate(orders):
            expected = predictor.predict(order)
            for got in results[i]:
                self.check_shape(rule, got, len(order))
                self.same(rule, expected, got, self.atol, f"thread {i} of {threads}")

    def rebuilt(
        self, spec: RebuildSpec, mode: Literal["subprocess", "pickle"], timeout_s: float
    ) -> Predictions:
        try:
            return spec.predict_elsewhere(mode, timeout_s=timeout_s)
        except RebuildError as exc:
            raise self.fail(Rule.REBUILD, str(exc)) from exc

    def same(
        self,
        rule: Rule,
        expected: Predictions,
        got: Predictions,
        tolerance: float,
        what: str,
        *,
        rows: Sequence[int] | None = None,
    ) -> None:
        """``got`` says what ``expected`` says: the same labels, confidences within ``tolerance``.

        Where both carry probabilities over the same label set, a label may differ only
        between labels whose probabilities are within ``tolerance`` (a near tie that moved),
        and every probability must be within ``tolerance``. ``rows`` names the inputs.
        """
        self.check_shape(rule, got, len(expected))
        names = list(range(len(expected))) if rows is None else list(rows)
        matrices = _comparable_probabilities(expected, got)
        if matrices is not None:
            gap = np.abs(matrices[0] - matrices[1]).max(axis=1) if len(names) else np.zeros(0)
            if len(gap) and float(gap.max()) > tolerance:
                i = int(gap.argmax())
                raise self.fail(
                    rule,
                    f"{what}: the probabilities of input {names[i]} moved by {gap[i]:.3g} "
                    f"> {tolerance:g} (labelled {got.labels[i]!r} with {got.confidences[i]}, "
                    f"was {expected.labels[i]!r} with {expected.confidences[i]})",
                )
            return
        for i, (a, b) in enumerate(zip(expected.labels, got.labels, strict=True)):
            if a != b:
                raise self.fail(rule, f"{what}: input {names[i]} is labelled {b!r}, not {a!r}")
        gap = np.abs(np.asarray(expected.confidences) - np.asarray(got.confidences))
        if len(gap) and float(gap.max()) > tolerance:
            i = int(gap.argmax())
            raise self.fail(
                rule,
                f"{what}: input {names[i]} has confidence {got.confidences[i]}, not "
                f"{expected.confidences[i]} (differs by {gap[i]:.3g} > {tolerance:g})",
            )


def _comparable_probabilities(
    expected: Predictions, got: Predictions
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both probability matrices, when both predictions have them over one label set."""
    if expected.probabilities is None or got.probabilities is None:
        return None
    if not expected.label_set or expected.label_set != got.label_set:
        return None
    a = np.asarray(expected.probabilities, dtype=np.float64)
    b = np.asarray(got.probabilities, dtype=np.float64)
    return (a, b) if a.shape == b.shape else None


def _row(predictions: Predictions, i: int) -> Predictions:
    probabilities = predictions.probabilities
    return Predictions(
        labels=[predictions.labels[i]],
        confidences=np.asarray(predictions.confidences)[i : i + 1],
        label_set=list(predictions.label_set),
        probabilities=None if probabilities is None else np.asarray(probabilities)[i : i + 1],
    )
