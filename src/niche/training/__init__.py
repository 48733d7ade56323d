"""Fit specialists on dataset versions and record their lineage.

>>> from niche.training import train_text_specialist
>>> trained = train_text_specialist(version, encoder)
"""

from niche.training.text import TrainedModel, code_version, train_text_specialist

__all__ = ["TrainedModel", "code_version", "train_text_specialist"]
