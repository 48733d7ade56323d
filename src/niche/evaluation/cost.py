"""Cost and energy as pure functions of recorded usage.

A predictor records what each batch consumed on its predictions
(:class:`~niche.specialists.Usage`: compute
seconds now, tokens for a remote model); what that cost follows from prices alone, so cost
can be recomputed from logged rows at any price.

    >>> cost_usd(Usage(compute_s=3600.0), Prices(cpu_hour_usd=0.045))
    0.045
    >>> cost_usd(Usage(input_tokens=1_000_000), Prices(input_per_1m_tokens_usd=0.15))
    0.15
    >>> energy_wh(Usage(compute_s=1.8), watts_per_core=2.0)
    0.001
"""

from __future__ import annotations

from dataclasses import dataclass

from niche.settings import Settings
from niche.specialists.base import Usage

__all__ = ["Prices", "cost_per_1m", "cost_usd", "energy_wh", "usage_per_1m"]

_SECONDS_PER_HOUR = 3600.0
_PER_MILLION = 1e6


@dataclass(frozen=True)
class Prices:
    """What compute and tokens cost: one CPU core for an hour, 1M input and output tokens.

    >>> Prices.from_settings(Settings()).cpu_hour_usd
    0.045
    """

    cpu_hour_usd: float = 0.0
    input_per_1m_tokens_usd: float = 0.0
    output_per_1m_tokens_usd: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Prices:
        """``NICHE_CPU_HOUR_USD`` and the global general model's token prices."""
        return cls(
            cpu_hour_usd=settings.get("NICHE_CPU_HOUR_USD"),
            input_per_1m_tokens_usd=settings.get("NICHE_GENERAL_PRICE_INPUT_PER_1M_TOKENS_USD"),
            output_per_1m_tokens_usd=settings.get("NICHE_GENERAL_PRICE_OUTPUT_PER_1M_TOKENS_USD"),
        )


def cost_usd(usage: Usage, prices: Prices) -> float:
    """USD for ``usage``: compute seconds at the CPU-hour price plus tokens at their prices.

    >>> cost_usd(Usage(compute_s=0.004, input_tokens=40, output_tokens=2), prices)
    """
    compute = usage.compute_s / _SECONDS_PER_HOUR * prices.cpu_hour_usd
    tokens = (
        (usage.input_tokens or 0) * prices.input_per_1m_tokens_usd
        + (usage.output_tokens or 0) * prices.output_per_1m_tokens_usd
    ) / _PER_MILLION
    return compute + tokens


def cost_per_1m(usage: Usage, n: int, prices: Prices) -> float:
    """USD for one million predictions at the rate of ``usage`` for ``n`` of them.

    The one place a per-prediction cost is derived from recorded usage: evaluations (the
    specialist's CPU seconds, the general model's tokens) and what the registry stores of them
    are priced by it.

        >>> cost_per_1m(Usage(input_tokens=12_000, output_tokens=3_000), 1000,
        ...             Prices(input_per_1m_tokens_usd=1.0, output_per_1m_tokens_usd=2.0))
        18.0
    """
    return cost_usd(usage_per_1m(usage, n), prices)


def energy_wh(usage: Usage, *, watts_per_core: float) -> float:
    """Watt-hours for ``usage``: compute seconds x watts per busy core / 3600.

    This is CodeCarbon's fallback when it cannot read power counters: a fixed draw (TDP
    share) per busy core, times CPU time. Tokens of a remote model are not counted (its
    energy is the vendor's, unknown here).

        >>> energy_wh(Usage(compute_s=0.0018), watts_per_core=2.0)  # 3.6 mJ
        1e-06
    """
    return usage.compute_s * watts_per_core / _SECONDS_PER_HOUR


def usage_per_1m(usage: Usage, n: int) -> Usage:
    """The usage of one million predictions at the rate of ``usage`` for ``n`` of them.

    >>> usage_per_1m(Usage(compute_s=2.0, input_tokens=30), 1000)
    Usage(compute_s=2000.0, input_tokens=30000, output_tokens=None)
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return Usage(
        compute_s=usage.compute_s / n * _PER_MILLION,
        input_tokens=_tokens_per_1m(usage.input_tokens, n),
        output_tokens=_tokens_per_1m(usage.output_tokens, n),
    )


def _tokens_per_1m(tokens: int | None, n: int) -> int | None:
    return None if tokens is None else round(tokens * _PER_MILLION / n)
