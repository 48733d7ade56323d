"""niche: turn one general model into a portfolio of cheap, measured specialists, safely.

    >>> import niche
    >>> niche.__version__
    '0.1.0'

Importing niche is cheap: heavy libraries (torch, transformers, onnxruntime) load only when a
model is first used.
"""

from niche.errors import NicheError
from niche.settings import SETTINGS, Settings

__version__ = "0.1.0"

__all__ = ["SETTINGS", "NicheError", "Settings", "__version__"]
