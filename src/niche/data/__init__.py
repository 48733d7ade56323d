"""Data: load labelled texts, validate them, curate them into versioned splits.

>>> from niche.data import curate, load_file
>>> version = curate(load_file("tickets.csv"), seed=0)  # doctest: +SKIP
>>> version.save(".niche/datasets/tickets")  # doctest: +SKIP
"""

from niche.data.catalog import CATALOG, CatalogDataset, CatalogEntry, resolve_dataset
from niche.data.curation import check_usable, curate
from niche.data.loading import load_file, load_hf
from niche.data.normalise import normalise_text
from niche.data.rows import Rows
from niche.data.shift import ShiftPhase, StreamItem, build_stream, parse_shift
from niche.data.version import CurationReport, DatasetVersion

__all__ = [
    "CATALOG",
    "CatalogDataset",
    "CatalogEntry",
    "CurationReport",
    "DatasetVersion",
    "Rows",
    "ShiftPhase",
    "StreamItem",
    "build_stream",
    "check_usable",
    "curate",
    "load_file",
    "load_hf",
    "normalise_text",
    "parse_shift",
    "resolve_dataset",
]
