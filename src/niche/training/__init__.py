"""Fit specialists of any kind on dataset versions and record their lineage.

>>> from niche.training import train
>>> trained = train(version, "text", FitContext(encoder=encoder))
>>> trained = train_text_specialist(version, encoder)   # the same, for the text kind
"""

from niche.training.fit import TrainedModel, code_version, stratified_sample, train
from niche.training.text import train_text_specialist

__all__ = ["TrainedModel", "code_version", "stratified_sample", "train", "train_text_specialist"]
