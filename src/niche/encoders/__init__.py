"""Text encoders and the embedding cache.

    >>> from niche.encoders import default_encoder
    >>> vectors = default_encoder().encode(["where is my card?", "I lost my PIN"])
    >>> vectors.shape
    (2, 384)

Importing this package is cheap: onnxruntime and tokenizers load on first ``encode``, and torch
only when the ONNX export has to be built.
"""

from niche.encoders.base import Encoder
from niche.encoders.cache import CachedEncoder, EmbeddingCache
from niche.encoders.defaults import default_encoder
from niche.encoders.onnx_encoder import OnnxEncoder

__all__ = ["CachedEncoder", "EmbeddingCache", "Encoder", "OnnxEncoder", "default_encoder"]
