"""Views of the portfolio over the registry's records: the leaderboard and the total cost of
ownership, each from measured figures (evaluations, usage, traffic) and settings.

>>> board = leaderboard(since="30d")
>>> board.to_dict()["portfolio"]["score"]
0.88
>>> tco(months=6).portfolio["savings_pct"]
>>> build_report(months=6).write("report.html")  # the self-contained HTML page
>>> timelines(registry=registry)["banking77"][-1]["alarm"]  # the stored monitoring checks
False
"""

from niche.reports.html import Report, build_report
from niche.reports.leaderboard import (
    FORMULA,
    NO_DOMAIN,
    DomainBoard,
    Leaderboard,
    LeaderboardRow,
    Side,
    leaderboard,
)
from niche.reports.tco import VERDICTS, TaskTco, TcoMonth, TcoReport, tco
from niche.reports.timelines import timelines

__all__ = [
    "FORMULA",
    "NO_DOMAIN",
    "VERDICTS",
    "DomainBoard",
    "Leaderboard",
    "LeaderboardRow",
    "Report",
    "Side",
    "TaskTco",
    "TcoMonth",
    "TcoReport",
    "build_report",
    "leaderboard",
    "tco",
    "timelines",
]
