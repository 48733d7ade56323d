"""Views of the portfolio over the registry's records: the total cost of ownership.

>>> from niche.reports import tco
>>> tco(months=6).portfolio["savings_pct"]
"""

from niche.reports.tco import VERDICTS, TaskTco, TcoMonth, TcoReport, tco

__all__ = ["VERDICTS", "TaskTco", "TcoMonth", "TcoReport", "tco"]
