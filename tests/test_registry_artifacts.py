"""The content-addressed artifact store, on a local directory and on an fsspec ``memory://`` root."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from niche.errors import ArtifactError, ChecksumMismatchError, NotFoundError
from niche.registry.artifacts import (
    MANIFEST_FILE,
    TEMP_MAX_AGE_S,
    ArtifactStore,
    content_digest,
)
from niche.settings import Settings


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model_dir(path: Path, seed: int = 0) -> Path:
    """A real specialist-shaped artifact: safetensors weights and a JSON config."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file(
        {"coef": rng.normal(size=(4, 8)).astype(np.float32), "intercept": np.zeros(4, np.float32)},
        str(path / "head.safetensors"),
    )
    (path / "config.json").write_text(json.dumps({"labels": ["a", "b", "c", "d"], "seed": seed}))
    return path


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """A store on a local directory, or on fsspec's in-memory file system (the remote path)."""
    if request.param == "local":
        yield ArtifactStore(tmp_path / "artifacts", cache_dir=tmp_path / "cache")
        return
    root = f"memory://niche-test-{uuid.uuid4().hex}"
    yield ArtifactStore(root, cache_dir=tmp_path / "cache")
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _stored(store: ArtifactStore, *parts: str) -> str:
    """A path inside the store, as its file system names it (to tamper with it)."""
    return "/".join((fsspec.core.url_to_fs(store.root)[1].rstrip("/"), *parts))


def _artifact_dir(store: ArtifactStore, digest: str) -> str:
    return _stored(store, "sha256", digest[:2], digest)


def _write_stored(store: ArtifactStore, digest: str, name: str, data: bytes) -> None:
    with store.fs.open(f"{_artifact_dir(store, digest)}/{name}", "wb") as stream:
        stream.write(data)


def test_content_digest_is_sha256_of_sorted_name_lines() -> None:
    files = {"z.json": "2" * 64, "a.bin": "1" * 64}
    expected = _sha256(f"a.bin:{'1' * 64}\nz.json:{'2' * 64}".encode())
    assert content_digest(files) == expected


def test_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    source = _model_dir(tmp_path / "model")
    artifact = store.put_dir(source)

    expected = {p.name: _sha256(p.read_bytes()) for p in source.iterdir()}
    assert artifact.files == expected
    assert artifact.digest == content_digest(expected)
    assert artifact.size == sum(p.stat().st_size for p in source.iterdir())
    assert artifact.uri.endswith(f"/sha256/{artifact.digest[:2]}/{artifact.digest}")
    assert store.exists(artifact.digest)
    assert store.digests() == {artifact.digest}
    assert store.manifest(artifact.digest) == expected

    local = store.get_dir(artifact.digest)
    for name in expected:
        assert (local / name).read_bytes() == (source / name).read_bytes()
    assert load_file(str(local / "head.safetensors"))["coef"].shape == (4, 8)
    if store.is_local:
        assert local == Path(store.root) / "sha256" / artifact.digest[:2] / artifact.digest
    else:
        assert local == tmp_path / "cache" / artifact.digest
        assert store.get_dir(artifact.digest) == local  # the verified download is reused


def test_get_dir_into_dest_copies_the_files(store: ArtifactStore, tmp_path: Path) -> None:
    artifact = store.put_dir(_model_dir(tmp_path / "model"))
    dest = store.get_dir(artifact.digest, tmp_path / "out" / "model")
    assert dest == tmp_path / "out" / "model"
    assert {p.name for p in dest.iterdir()} == {"head.safetensors", "config.json", MANIFEST_FILE}
    with pytest.raises(ArtifactError, match="not an empty directory"):
        store.get_dir(artifact.digest, dest)


def test_put_is_idempotent_and_leaves_no_temp(store: ArtifactStore, tmp_path: Path) -> None:
    first = store.put_dir(_model_dir(tmp_path / "one"))
    again = store.put_dir(_model_dir(tmp_path / "two"))  # same files, another directory
    other = store.put_dir(_model_dir(tmp_path / "three", seed=1))
    assert again == first
    assert other.digest != first.digest
    assert store.digests() == {first.digest, other.digest}
    temp = _stored(store, "tmp")
    assert not store.fs.exists(temp) or store.fs.ls(temp) == []


def test_put_files_names_files_independently_of_their_paths(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = _model_dir(tmp_path / "model")
    artifact = store.put_files({"weights.safetensors": source / "head.safetensors"})
    assert set(artifact.files) == {"weights.safetensors"}
    assert (store.get_dir(artifact.digest) / "weights.safetensors").is_file()


def test_tampered_file_is_refused_naming_the_digest(store: ArtifactStore, tmp_path: Path) -> None:
    artifact = store.put_dir(_model_dir(tmp_path / "model"))
    _write_stored(store, artifact.digest, "config.json", b'{"labels": ["evil"]}')
    with pytest.raises(ChecksumMismatchError, match="sha256 mismatch") as caught:
        store.get_dir(artifact.digest)
    assert artifact.digest in str(caught.value)
    assert "config.json" in str(caught.value)
    assert not (tmp_path / "cache" / artifact.digest).exists()  # nothing unverified is left


def test_tampered_manifest_is_refused_naming_the_digest(
    store: ArtifactStore, tmp_path: Path
) -> None:
    artifact = store.put_dir(_model_dir(tmp_path / "model"))
    # Rewrite both the file and its manifest entry: only the digest can tell.
    evil = b'{"labels": ["evil"]}'
    _write_stored(store, artifact.digest, "config.json", evil)
    manifest = {"files": {**artifact.files, "config.json": _sha256(evil)}}
    _write_stored(store, artifact.digest, MANIFEST_FILE, json.dumps(manifest).encode())
    with pytest.raises(ChecksumMismatchError, match="digest mismatch") as caught:
        store.get_dir(artifact.digest)
    assert artifact.digest in str(caught.value)


def test_file_missing_from_the_store_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    artifact = store.put_dir(_model_dir(tmp_path / "model"))
    store.fs.rm(f"{_artifact_dir(store, artifact.digest)}/config.json")
    with pytest.raises(ArtifactError, match=r"config\.json") as caught:
        store.get_dir(artifact.digest)
    assert artifact.digest in str(caught.value)


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../escape.json", "/etc/passwd", "sub/file.json", "a\\b", "MANIFEST.json"],
)
def test_names_that_could_escape_are_refused(
    store: ArtifactStore, tmp_path: Path, name: str
) -> None:
    source = _model_dir(tmp_path / "model") / "config.json"
    with pytest.raises(ArtifactError, match="refused file name"):
        store.put_files({name: source})
    assert store.digests() == set()


def test_escaping_name_in_a_stored_manifest_is_refused(
    store: ArtifactStore, tmp_path: Path
) -> None:
    artifact = store.put_dir(_model_dir(tmp_path / "model"))
    files = {"../../escape.json": "0" * 64}
    digest = content_digest(files)  # a manifest consistent with its digest, but hostile
    store.fs.makedirs(_artifact_dir(store, digest), exist_ok=True)
    _write_stored(store, digest, MANIFEST_FILE, json.dumps({"files": files}).encode())
    with pytest.raises(ArtifactError, match="refused file name"):
        store.get_dir(digest)
    assert store.get_dir(artifact.digest).is_dir()


def test_subdirectories_are_refused(store: ArtifactStore, tmp_path: Path) -> None:
    source = _model_dir(tmp_path / "model")
    (source / "nested").mkdir()
    with pytest.raises(ArtifactError, match="flat"):
        store.put_dir(source)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_is_refused_by_its_magic_bytes(
    store: ArtifactStore, tmp_path: Path, protocol: int
) -> None:
    source = _model_dir(tmp_path / "model")
    (source / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))
    with pytest.raises(ArtifactError, match="pickle"):
        store.put_dir(source)
    assert store.digests() == set()


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib", ".pt"])
def test_pickle_suffixes_are_refused(store: ArtifactStore, tmp_path: Path, suffix: str) -> None:
    source = _model_dir(tmp_path / "model")
    (source / f"model{suffix}").write_text("{}")
    with pytest.raises(ArtifactError, match="pickle"):
        store.put_dir(source)


def test_zip_holding_a_pickle_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    """torch.save's format: a zip archive whose data.pkl is the pickle."""
    source = _model_dir(tmp_path / "model")
    with zipfile.ZipFile(source / "weights.bin", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
    with pytest.raises(ArtifactError, match="zip archive holding a pickle"):
        store.put_dir(source)


def test_safetensors_whose_header_length_looks_like_pickle_is_accepted(
    store: ArtifactStore, tmp_path: Path
) -> None:
    # A header of 0x280 bytes starts the file with b"\x80\x02", the pickle protocol 2 marker.
    path = tmp_path / "model" / "head.safetensors"
    path.parent.mkdir()
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header = header.ljust(0x280, b" ")
    path.write_bytes(len(header).to_bytes(8, "little") + header + np.ones(2, "<f4").tobytes())
    assert path.read_bytes()[:2] == b"\x80\x02"
    artifact = store.put_dir(path.parent)
    loaded = load_file(str(store.get_dir(artifact.digest) / "head.safetensors"))
    assert loaded["w"].tolist() == [1.0, 1.0]


def test_gc_removes_unreferenced_and_keeps_referenced(store: ArtifactStore, tmp_path: Path) -> None:
    kept = store.put_dir(_model_dir(tmp_path / "kept")).digest
    dropped = store.put_dir(_model_dir(tmp_path / "dropped", seed=1)).digest

    assert store.gc({kept}, dry_run=True) == [dropped]
    assert store.digests() == {kept, dropped}

    assert store.gc({kept}) == [dropped]
    assert store.digests() == {kept}
    assert store.get_dir(kept).is_dir()
    with pytest.raises(NotFoundError, match=dropped):
        store.get_dir(dropped)
    assert store.gc({kept}) == []


def test_delete(store: ArtifactStore, tmp_path: Path) -> None:
    digest = store.put_dir(_model_dir(tmp_path / "model")).digest
    store.delete(digest)
    assert not store.exists(digest)
    with pytest.raises(NotFoundError, match=digest):
        store.delete(digest)


@pytest.mark.parametrize("digest", ["", "abc", "../" + "0" * 61, "A" * 64])
def test_malformed_digests_are_refused(store: ArtifactStore, digest: str) -> None:
    with pytest.raises(ArtifactError, match="not a sha256 digest"):
        store.exists(digest)


def test_temp_of_a_crashed_put_is_collected_once_older_than_an_hour(tmp_path: Path) -> None:
    source = _model_dir(tmp_path / "model")
    root = tmp_path / "artifacts"
    started = 1_700_000_000
    # A real crash: the process dies between writing the temp dir and renaming it into place.
    crash = (
        "import os, sys\n"
        "from niche.registry.artifacts import ArtifactStore\n"
        "os.replace = lambda *args: os._exit(3)\n"
        f"ArtifactStore(sys.argv[1], clock=lambda: {started}.0).put_dir(sys.argv[2])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", crash, str(root), str(source)], env=os.environ, check=False
    )
    assert result.returncode == 3
    temps = list((root / "tmp").iterdir())
    assert len(temps) == 1
    assert {p.name for p in temps[0].iterdir()} == {
        "head.safetensors",
        "config.json",
        MANIFEST_FILE,
    }

    clock = FakeClock(started + TEMP_MAX_AGE_S)
    store = ArtifactStore(root, clock=clock)
    assert store.digests() == set()
    assert store.gc(set()) == []
    assert temps[0].exists()

    clock.now += 1
    assert store.gc(set(), dry_run=True) == [f"tmp/{temps[0].name}"]
    assert temps[0].exists()
    assert store.gc(set()) == [f"tmp/{temps[0].name}"]
    assert not temps[0].exists()


def test_default_root_is_under_niche_home(niche_home: Path) -> None:
    store = ArtifactStore()
    assert store.root == str(niche_home / "artifacts")
    assert ArtifactStore.from_settings(Settings()).root == store.root
    assert store.cache_dir == niche_home / "cache" / "artifacts"
