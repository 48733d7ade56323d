"""niche.data catalog: real files from NICHE_DATASETS, real downloads from a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from niche.data import CATALOG, Rows, resolve_dataset
from niche.data.catalog import CLINC150_DOMAINS
from niche.errors import ChecksumMismatchError, DatasetNotFoundError, DownloadError
from niche.settings import Settings

SMS = CATALOG["sms_spam"].files[0]


def _local(datasets_dir: Path, home: Path) -> Settings:
    return Settings(environ={"NICHE_DATASETS": str(datasets_dir), "NICHE_HOME": str(home)})


def test_banking77_from_the_local_copy(datasets_dir: Path, tmp_path: Path) -> None:
    dataset = resolve_dataset("banking77", _local(datasets_dir, tmp_path))
    assert dataset.name == "banking77"
    assert len(dataset.train) == 10003
    assert dataset.test is not None and len(dataset.test) == 3080
    assert len(dataset.train.label_set()) == 77
    assert dataset.train.texts[0] == "I am still waiting on my card?"
    assert dataset.train.labels[0] == "card_arrival"
    assert dataset.label_descriptions is None
    assert not (tmp_path / "cache").exists()  # nothing downloaded or cached


def test_sms_spam_has_no_canonical_test_split(datasets_dir: Path, tmp_path: Path) -> None:
    dataset = resolve_dataset("sms_spam", _local(datasets_dir, tmp_path))
    assert len(dataset.train) == 5574
    assert dataset.test is None
    assert (dataset.train.labels.count("ham"), dataset.train.labels.count("spam")) == (4827, 747)
    # "ham" alone means meat to a general model: the catalog describes both labels.
    assert dataset.label_descriptions is not None
    assert sorted(dataset.label_descriptions) == ["ham", "spam"]


def test_clinc150_and_one_domain(datasets_dir: Path, tmp_path: Path) -> None:
    settings = _local(datasets_dir, tmp_path)
    full = resolve_dataset("clinc150", settings)
    assert (len(full.train), len(full.test or ())) == (18000, 4500)
    assert len(full.train.label_set()) == 150
    assert "oos" not in full.train.label_set()
    assert "out-of-scope" in full.description
    banking = resolve_dataset("clinc150/banking", settings)
    domains = json.loads((datasets_dir / "clinc150" / "domains.json").read_text())
    assert sorted(domains) == list(CLINC150_DOMAINS)
    assert banking.train.label_set() == sorted(domains["banking"])
    assert len(banking.train.label_set()) == 15
    assert banking.test is not None and banking.test.label_set() == sorted(domains["banking"])
    assert (len(banking.train), len(banking.test)) == (1800, 450)
    assert banking.name == "clinc150/banking"


def test_unknown_names_list_what_is_known(datasets_dir: Path, tmp_path: Path) -> None:
    settings = _local(datasets_dir, tmp_path)
    with pytest.raises(DatasetNotFoundError) as caught:
        resolve_dataset("banking78", settings)
    message = str(caught.value)
    assert "unknown dataset 'banking78'" in message
    for name in ("banking77", "clinc150", "sms_spam", "clinc150/<auto_and_commute|banking"):
        assert name in message
    with pytest.raises(DatasetNotFoundError, match="clinc150 has: auto_and_commute, banking"):
        resolve_dataset("clinc150/bank", settings)
    with pytest.raises(DatasetNotFoundError, match="unknown dataset 'sms_spam/x'"):
        resolve_dataset("sms_spam/x", settings)


def test_a_corrupt_local_copy_is_refused(datasets_dir: Path, tmp_path: Path) -> None:
    local = tmp_path / "datasets" / "sms_spam"
    local.mkdir(parents=True)
    data = (datasets_dir / "sms_spam" / SMS.name).read_bytes()
    (local / SMS.name).write_bytes(data.replace(b"ham", b"spam", 1))
    settings = _local(tmp_path / "datasets", tmp_path / "home")
    with pytest.raises(ChecksumMismatchError, match=f"{SMS.name}: sha256 mismatch"):
        resolve_dataset("sms_spam", settings)


@dataclass
class Mirror:
    """A real HTTP server serving ``root`` laid out as <owner>/<repo>/<commit>/<path>."""

    root: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)

    def publish(self, content: bytes) -> None:
        target = self.root / SMS.owner / SMS.repo / SMS.commit / SMS.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    mirror = Mirror(tmp_path / "mirror")
    mirror.root.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            mirror.requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(mirror.root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _online(mirror: Mirror, home: Path) -> Settings:
    return Settings(environ={"NICHE_DATASET_MIRROR": mirror.url, "NICHE_HOME": str(home)})


def test_download_into_the_cache_then_reuse_it(
    mirror: Mirror, datasets_dir: Path, tmp_path: Path
) -> None:
    original = datasets_dir / "sms_spam" / SMS.name
    mirror.publish(original.read_bytes())
    settings = _online(mirror, tmp_path / "home")
    assert settings.datasets_dir is None
    calls: list[tuple[int, int | None]] = []
    dataset = resolve_dataset("sms_spam", settings, progress=lambda d, t: calls.append((d, t)))
    assert len(dataset.train) == 5574
    assert mirror.requests == [f"/{SMS.owner}/{SMS.repo}/{SMS.commit}/{SMS.path}"]
    cached = tmp_path / "home" / "cache" / "datasets" / "sms_spam" / SMS.name
    assert cached.read_bytes() == original.read_bytes()
    assert list(cached.parent.iterdir()) == [cached]  # no temp file left
    size = original.stat().st_size
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    again = resolve_dataset("sms_spam", settings)
    assert again.train == Rows(
        dataset.train.texts, dataset.train.labels, str(cached), dataset.train.lines
    )
    assert len(mirror.requests) == 1  # served from the cache


def test_a_corrupt_cache_entry_is_downloaded_again(
    mirror: Mirror, datasets_dir: Path, tmp_path: Path
) -> None:
    original = (datasets_dir / "sms_spam" / SMS.name).read_bytes()
    mirror.publish(original)
    cached = tmp_path / "home" / "cache" / "datasets" / "sms_spam" / SMS.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(original[:100])
    resolve_dataset("sms_spam", _online(mirror, tmp_path / "home"))
    assert len(mirror.requests) == 1
    assert cached.read_bytes() == original


def test_a_tampered_download_is_refused_and_leaves_nothing(
    mirror: Mirror, datasets_dir: Path, tmp_path: Path
) -> None:
    original = (datasets_dir / "sms_spam" / SMS.name).read_bytes()
    mirror.publish(original.replace(b"Free entry", b"Fr33 entry"))
    with pytest.raises(ChecksumMismatchError) as caught:
        resolve_dataset("sms_spam", _online(mirror, tmp_path / "home"))
    assert mirror.url in str(caught.value)
    assert caught.value.expected == SMS.sha256
    cache = tmp_path / "home" / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_a_failed_download_names_the_url(mirror: Mirror, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as caught:
        resolve_dataset("sms_spam", _online(mirror, tmp_path / "home"))
    url = f"{mirror.url}/{SMS.owner}/{SMS.repo}/{SMS.commit}/{SMS.path}"
    assert caught.value.url == url
    assert f"could not download {url}: HTTP 404" in str(caught.value)
    cache = tmp_path / "home" / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_a_missing_local_file_falls_back_to_the_download(
    mirror: Mirror, datasets_dir: Path, tmp_path: Path
) -> None:
    mirror.publish((datasets_dir / "sms_spam" / SMS.name).read_bytes())
    (tmp_path / "empty-datasets").mkdir()
    settings = Settings(
        environ={
            "NICHE_DATASETS": str(tmp_path / "empty-datasets"),
            "NICHE_DATASET_MIRROR": mirror.url + "/",
            "NICHE_HOME": str(tmp_path / "home"),
        }
    )
    assert len(resolve_dataset("sms_spam", settings).train) == 5574
    assert len(mirror.requests) == 1


def test_pinned_checksums_match_the_shared_copies(datasets_dir: Path) -> None:
    for entry in CATALOG.values():
        for file in entry.files:
            data = (datasets_dir / entry.name / file.name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == file.sha256, file.name
    assert SMS.url() == (
        "https://raw.githubusercontent.com/maze-runnar/SMS-spam-detection/"
        "fc58dd2f68434dfb55ad1fc3f9a6544f332f9732/smsspamcollection/SMSSpamCollection"
    )
