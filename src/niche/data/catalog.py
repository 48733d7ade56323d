"""Catalog of public datasets niche knows by name, with pinned sources and checksums.

Each file is taken from, in order: the local copy under ``NICHE_DATASETS/<dataset>/``; the
download cache ``NICHE_CACHE_DIR/datasets/<dataset>/``; a download from the source repository
at a pinned commit (``NICHE_DATASET_MIRROR`` replaces ``https://raw.githubusercontent.com``).
Every file's sha256 is checked against the pinned value, whichever way it came.

    >>> from niche.data import resolve_dataset
    >>> banking = resolve_dataset("banking77")  # doctest: +SKIP
    >>> len(banking.train), len(banking.test)  # doctest: +SKIP
    (10003, 3080)
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from niche.data.loading import load_file
from niche.data.rows import Rows
from niche.errors import (
    ChecksumMismatchError,
    DatasetNotFoundError,
    DataValidationError,
    DownloadError,
)
from niche.settings import Settings

__all__ = [
    "CATALOG",
    "CLINC150_DOMAINS",
    "DEFAULT_DOWNLOAD_BASE",
    "DOWNLOAD_TIMEOUT_S",
    "CatalogDataset",
    "CatalogEntry",
    "CatalogFile",
    "Progress",
    "resolve_dataset",
]

DEFAULT_DOWNLOAD_BASE = "https://raw.githubusercontent.com"
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 16

Progress = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, bytes_total_or_None)`` while a file downloads."""

# The 10 domains of clinc150's domains.json at the pinned commit, for error messages and for
# refusing an unknown domain before anything is fetched.
CLINC150_DOMAINS = (
    "auto_and_commute",
    "banking",
    "credit_cards",
    "home",
    "kitchen_and_dining",
    "meta",
    "small_talk",
    "travel",
    "utility",
    "work",
)


@dataclass(frozen=True)
class CatalogFile:
    """One file of a catalog dataset: its local name and where it is published.

    The download URL is ``<base>/<owner>/<repo>/<commit>/<path>``.

        >>> CATALOG["sms_spam"].files[0].url()
        'https://raw.githubusercontent.com/maze-runnar/SMS-spam-detection/fc58dd2f68434dfb55ad1fc3f9a6544f332f9732/smsspamcollection/SMSSpamCollection'
    """

    name: str
    owner: str
    repo: str
    commit: str
    path: str
    sha256: str

    def url(self, base: str = DEFAULT_DOWNLOAD_BASE) -> str:
        """The download URL under ``base`` (default raw.githubusercontent.com)."""
        return f"{base.rstrip('/')}/{self.owner}/{self.repo}/{self.commit}/{self.path}"


Reader = Callable[[Mapping[str, Path], str | None], tuple[Rows, Rows | None]]
"""Reads a dataset's files (local name -> path) and an optional subset into (train, test)."""


@dataclass(frozen=True)
class CatalogEntry:
    """A dataset of the catalog: its files, how to read them, and what it is.

    ``subsets`` lists the names accepted after a slash (``clinc150/banking``); ``subset_kind``
    says what they are, for messages.

        >>> CATALOG["banking77"].license
        'CC BY 4.0'
    """

    name: str
    description: str
    license: str
    citation: str
    files: tuple[CatalogFile, ...]
    reader: Reader
    subsets: tuple[str, ...] = ()
    subset_kind: str = "subset"
    # What the zero-shot general model compares texts with, where a label's name alone is a
    # poor description ("ham").
    label_descriptions: Mapping[str, str] | None = None


@dataclass(frozen=True)
class CatalogDataset:
    """A resolved catalog dataset: train rows and, when the source has one, its test split.

    >>> ds = resolve_dataset("clinc150/banking")  # doctest: +SKIP
    >>> ds.train.label_set()[:2]  # doctest: +SKIP
    ['account_blocked', 'balance']
    """

    name: str
    train: Rows
    test: Rows | None
    description: str
    label_descriptions: dict[str, str] | None = None


def resolve_dataset(
    name: str, settings: Settings | None = None, *, progress: Progress | None = None
) -> CatalogDataset:
    """Find, verify and read the catalog dataset ``name``.

    Names: ``banking77``, ``clinc150``, ``clinc150/<domain>`` (one of
    :data:`CLINC150_DOMAINS`) and ``sms_spam``. Files come from ``NICHE_DATASETS``, the
    download cache, or a download (see the module docstring); ``progress`` is called with
    ``(bytes_done, bytes_total_or_None)`` during downloads only.

        >>> spam = resolve_dataset("sms_spam", progress=lambda done, total: None)  # doctest: +SKIP

    Raises :class:`~niche.errors.DatasetNotFoundError` for an unknown name,
    :class:`~niche.errors.DownloadError` when a download fails and
    :class:`~niche.errors.ChecksumMismatchError` when a file's bytes differ from the pinned
    digest.
    """
    settings = settings if settings is not None else Settings()
    base, slash, subset = name.partition("/")
    entry = CATALOG.get(base)
    if entry is None or (slash and subset not in entry.subsets):
        raise DatasetNotFoundError(_unknown_name_message(name, entry))
    paths = {file.name: _fetch(entry.name, file, settings, progress) for file in entry.files}
    train, test = entry.reader(paths, subset or None)
    description = entry.description
    if subset:
        description = (
            f"{description} Restricted to the {subset!r} {entry.subset_kind} "
            f"({len(train.label_set())} labels)."
        )
    descriptions = dict(entry.label_descriptions) if entry.label_descriptions else None
    return CatalogDataset(
        name=name,
        train=train,
        test=test,
        description=description,
        label_descriptions=descriptions,
    )


def _unknown_name_message(name: str, entry: CatalogEntry | None) -> str:
    if entry is not None and entry.subsets:
        return (
            f"unknown {entry.subset_kind} in {name!r}; {entry.name} has: "
            f"{', '.join(entry.subsets)} "
            f"(e.g. {entry.name}/{entry.subsets[0]})"
        )
    known = []
    for key, item in CATALOG.items():
        known.append(key)
        if item.subsets:
            known.append(f"{key}/<{'|'.join(item.subsets)}>")
    return f"unknown dataset {name!r}; the catalog has: {', '.join(known)}"


def _fetch(dataset: str, file: CatalogFile, settings: Settings, progress: Progress | None) -> Path:
    local_root = settings.datasets_dir
    if local_root is not None:
        local = local_root / dataset / file.name
        if local.is_file():
            _verify(local, file.sha256)
            return local
    cache = settings.cache_dir / "datasets" / dataset
    cached = cache / file.name
    if cached.is_file():
        if _sha256_of(cached) == file.sha256:
            return cached
        # A corrupt cache entry is ours to replace.
        cached.unlink()
    mirror = settings.get("NICHE_DATASET_MIRROR")
    url = file.url(mirror or DEFAULT_DOWNLOAD_BASE)
    cache.mkdir(parents=True, exist_ok=True)
    _download(url, cached, file.sha256, progress, hint=_hint(dataset, settings))
    return cached


def _verify(path: Path, expected: str) -> None:
    actual = _sha256_of(path)
    if actual != expected:
        raise ChecksumMismatchError(str(path), expected=expected, actual=actual)


def _sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _download(
    url: str, target: Path, expected: str, progress: Progress | None, *, hint: str
) -> None:
    """Stream ``url`` into a temp file next to ``target``, verify, then rename into place."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    done = 0
                    if progress is not None:
                        progress(done, total)
                    while chunk := response.read(_CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            except urllib.error.HTTPError as exc:
                exc.close()
                raise DownloadError(
                    f"could not download {url}: HTTP {exc.code} {exc.reason}{hint}", url=url
                ) from exc
            except (OSError, ValueError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DownloadError(f"could not download {url}: {reason}{hint}", url=url) from exc
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumMismatchError(f"download of {url}", expected=expected, actual=actual)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


# Where a checkout's Makefile finds local copies (NICHE_DATASETS ?= ../shared/datasets), and a
# datasets/ folder here: a download that fails names the one that holds the dataset.
_NEARBY = (Path("..") / "shared" / "datasets", Path("datasets"))


def _hint(dataset: str, settings: Settings) -> str:
    """The line to paste that makes the CLI find local copies, as ``make`` does."""
    configured = settings.datasets_dir
    for candidate in _NEARBY:
        folder = candidate.resolve()
        if (folder / dataset).is_dir() and folder != (configured and configured.resolve()):
            return (
                f"; a local copy is in {folder}: export NICHE_DATASETS={folder} "
                "(as make does), then run the command again"
            )
    where = f" ({configured} has no {dataset}/)" if configured is not None else ""
    return (
        f"; set NICHE_DATASETS to a folder with a local copy{where}: "
        f"export NICHE_DATASETS=/path/to/datasets (holding {dataset}/), or set "
        "NICHE_DATASET_MIRROR to a reachable mirror"
    )


def _read_banking77(paths: Mapping[str, Path], subset: str | None) -> tuple[Rows, Rows | None]:
    return (
        load_file(paths["train.csv"], label_col="category"),
        load_file(paths["test.csv"], label_col="category"),
    )


def _read_sms_spam(paths: Mapping[str, Path], subset: str | None) -> tuple[Rows, Rows | None]:
    rows = load_file(
        paths["SMSSpamCollection.tsv"], format="tsv", header=False, text_col=1, label_col=0
    )
    return rows, None


def _read_clinc150(paths: Mapping[str, Path], subset: str | None) -> tuple[Rows, Rows | None]:
    data_path = paths["data_full.json"]
    data = _load_json(data_path)
    intents: set[str] | None = None
    if subset is not None:
        domains_path = paths["domains.json"]
        domains = _load_json(domains_path)
        if not isinstance(domains, dict) or not isinstance(domains.get(subset), list):
            raise DataValidationError(f"no domain {subset!r}", path=domains_path, column=subset)
        intents = set(domains[subset])
    train = _clinc_split(data, ("train", "val"), data_path, intents)
    test = _clinc_split(data, ("test",), data_path, intents)
    return train, test


def _clinc_split(data: object, keys: tuple[str, ...], path: Path, intents: set[str] | None) -> Rows:
    texts: list[object] = []
    labels: list[object] = []
    for key in keys:
        pairs = data.get(key) if isinstance(data, dict) else None
        if not isinstance(pairs, list):
            raise DataValidationError(
                "expected a list of [text, intent] pairs", path=path, column=key
            )
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise DataValidationError(
                    f"expected a [text, intent] pair, got {pair!r}", path=path, column=key
                )
            if intents is None or pair[1] in intents:
                texts.append(pair[0])
                labels.append(pair[1])
    source = f"{path}#{'+'.join(keys)}"
    return Rows.from_columns(texts, labels, source=source, text_col="text", label_col="intent")


def _load_json(path: Path) -> object:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataValidationError(f"malformed JSON ({exc})", path=path) from None


_BANKING77 = ("PolyAI-LDN", "task-specific-datasets", "57ec275d8078af65b7731c2a98be812d844a6d6b")
_CLINC150 = ("clinc", "oos-eval", "828f8093932c8fe6ca7936c3d2e52903b1c523de")
_SMS_SPAM = ("maze-runnar", "SMS-spam-detection", "fc58dd2f68434dfb55ad1fc3f9a6544f332f9732")

CATALOG: dict[str, CatalogEntry] = {
    "banking77": CatalogEntry(
        name="banking77",
        description=(
            "BANKING77: online-banking customer queries labelled with 77 intents "
            "(10,003 train / 3,080 test, the canonical split)."
        ),
        license="CC BY 4.0",
        citation=(
            "Casanueva et al. 2020, Efficient Intent Detection with Dual Sentence Encoders, "
            "arXiv:2003.04807"
        ),
        files=(
            CatalogFile(
                "train.csv",
                *_BANKING77,
                "banking_data/train.csv",
                "b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b",
            ),
            CatalogFile(
                "test.csv",
                *_BANKING77,
                "banking_data/test.csv",
                "d12d6e3bc4c3103966ae786dc435913c0c563dfa328f5a3646d0e62cfeeb474d",
            ),
        ),
        reader=_read_banking77,
    ),
    "clinc150": CatalogEntry(
        name="clinc150",
        description=(
            "CLINC150: virtual-assistant queries over 150 intents in 10 domains. Train is the "
            "official train and validation splits together (18,000 rows), test the official "
            "test split (4,500); the out-of-scope ('oos') rows are excluded."
        ),
        license="CC BY 3.0",
        citation=(
            "Larson et al. 2019, An Evaluation Dataset for Intent Classification and "
            "Out-of-Scope Prediction, EMNLP-IJCNLP 2019"
        ),
        files=(
            CatalogFile(
                "data_full.json",
                *_CLINC150,
                "data/data_full.json",
                "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0",
            ),
            CatalogFile(
                "domains.json",
                *_CLINC150,
                "data/domains.json",
                "b947b579d3b8e74b06f93b01083d8efaff2888b43a3e362533bd88a6e1211b3a",
            ),
        ),
        reader=_read_clinc150,
        subsets=CLINC150_DOMAINS,
        subset_kind="domain",
    ),
    "sms_spam": CatalogEntry(
        name="sms_spam",
        description=(
            "SMS Spam Collection v.1: 5,574 SMS messages labelled ham or spam; no canonical "
            "test split."
        ),
        license="free use with attribution (authors' terms; UCI lists CC BY 4.0)",
        citation="Almeida & Gomez Hidalgo 2011, SMS Spam Collection v.1, doi:10.24432/C5CC84",
        files=(
            CatalogFile(
                "SMSSpamCollection.tsv",
                *_SMS_SPAM,
                "smsspamcollection/SMSSpamCollection",
                "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
            ),
        ),
        reader=_read_sms_spam,
        label_descriptions={
            "ham": "an ordinary personal text message",
            "spam": "spam: advertising, a prize or a scam",
        },
    ),
}
