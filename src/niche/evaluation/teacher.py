"""The general model's recorded answers, as a predictor: the teacher of a distilled dataset.

A dataset distilled from traffic is labelled by the general model itself, so asking it again
on the test split measures nothing but its own consistency (and costs its price per row). Its
answers were recorded with the traffic: :class:`TeacherAnswers` replays them, so the gate
compares a candidate with the general model where they can differ — the rows with a gold label.

    >>> teacher = TeacherAnswers({"card not here": "card_arrival"}, ["card_arrival", "pin"])
    >>> teacher.predict(["card not here"]).labels
    ['card_arrival']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from niche.errors import ValidationError
from niche.specialists.base import Predictions, TextInputs, Usage

__all__ = ["TEACHER_KIND", "TeacherAnswers"]

TEACHER_KIND = "teacher"
"""The ``kind`` of :class:`TeacherAnswers` (and of its evaluations: the gate reads it)."""


class TeacherAnswers:
    """Answers each text with the label the general model gave it in traffic (confidence 1).

    ``answers`` maps a (curated) text to the teacher's label; asking for a text it does not
    hold is a :class:`~niche.errors.ValidationError` naming it — evaluate it only on the rows
    whose answer was recorded. Its usage is zero: the answers were paid for when captured.
    """

    kind = TEACHER_KIND

    def __init__(self, answers: Mapping[str, str], label_set: Sequence[str]) -> None:
        self.answers = dict(answers)
        self._label_set = list(label_set)

    @property
    def label_set(self) -> list[str]:
        return list(self._label_set)

    def predict(self, inputs: TextInputs) -> Predictions:
        labels = []
        for text in inputs:
            label = self.answers.get(text)
            if label is None:
                raise ValidationError(
                    f"the general model's answer to {text[:80]!r} was not recorded with the "
                    "traffic this dataset was distilled from"
                )
            labels.append(label)
        return Predictions(
            labels=labels,
            confidences=np.ones(len(labels)),
            label_set=self.label_set,
            usage=Usage(compute_s=0.0),
        )
