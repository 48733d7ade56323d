"""The encoder niche uses unless told otherwise, built from ``NICHE_ENCODER_*`` settings.

>>> encoder = default_encoder()
>>> encoder.id
'all-MiniLM-L6-v2/onnx-int8-static'
"""

from __future__ import annotations

from niche.encoders.base import Encoder
from niche.encoders.cache import CachedEncoder, EmbeddingCache
from niche.encoders.onnx_encoder import OnnxEncoder
from niche.settings import Settings

__all__ = ["default_encoder"]


def default_encoder(
    settings: Settings | None = None, *, cache: bool = True, precision: str | None = None
) -> Encoder:
    """An :class:`OnnxEncoder` configured by ``settings``, behind the embedding cache.

    ``precision`` overrides ``NICHE_ENCODER_PRECISION`` (to load a model trained on another).

    The export and the cache file (``embeddings.sqlite``) both live in ``settings.cache_dir``.
    Nothing is loaded or created until the first ``encode``.

        >>> default_encoder(Settings(encoder_precision="fp32"), cache=False).id
        'all-MiniLM-L6-v2/onnx-fp32'
    """
    settings = Settings() if settings is None else settings
    encoder = OnnxEncoder(
        precision=precision or settings.get("NICHE_ENCODER_PRECISION"),
        threads=settings.get("NICHE_ENCODER_THREADS"),
        batch_size=settings.get("NICHE_ENCODER_BATCH_SIZE"),
        max_tokens=settings.get("NICHE_ENCODER_MAX_TOKENS"),
        cache_dir=settings.cache_dir,
    )
    if not cache:
        return encoder
    return CachedEncoder(encoder, EmbeddingCache(settings.cache_dir / "embeddings.sqlite"))
