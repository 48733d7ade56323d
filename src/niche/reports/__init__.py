"""Views of the portfolio over the registry's records: the leaderboard (and, beside it, TCO).

>>> board = leaderboard(since="30d")
>>> board.to_dict()["portfolio"]["score"]
0.88
"""

from niche.reports.leaderboard import (
    FORMULA,
    NO_DOMAIN,
    DomainBoard,
    Leaderboard,
    LeaderboardRow,
    Side,
    leaderboard,
)

__all__ = [
    "FORMULA",
    "NO_DOMAIN",
    "DomainBoard",
    "Leaderboard",
    "LeaderboardRow",
    "Side",
    "leaderboard",
]
