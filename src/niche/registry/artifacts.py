"""A content-addressed store for model artifacts: directories of files, on disk or any fsspec URL.

An artifact is a flat directory of files (a text specialist is ``head.safetensors`` +
``config.json``). Its digest is the sha256 over the sorted ``name:sha256`` lines of its files, so
the same files always land in the same place and are stored once::

    >>> store = ArtifactStore("s3://bucket/niche")        # or a local path; default NICHE_ARTIFACTS_URL
    >>> artifact = store.put_dir(Path("model"))
    >>> store.get_dir(artifact.digest) / "head.safetensors"

Layout under the root::

    sha256/<digest[:2]>/<digest>/   the files and MANIFEST.json (name -> sha256)
    tmp/<unix time>-<uuid>/         a put in progress; renamed into sha256/ when complete

Every read is verified: each file against the manifest, the manifest against the digest.
Pickle-like files are refused on the way in (loading a pickle runs code).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from niche.errors import ArtifactError, ChecksumMismatchError, NotFoundError
from niche.settings import Settings

__all__ = [
    "MANIFEST_FILE",
    "TEMP_MAX_AGE_S",
    "Artifact",
    "ArtifactStore",
    "content_digest",
    "local_dir",
]

MANIFEST_FILE = "MANIFEST.json"
# A temp dir older than this belongs to a put that crashed; gc removes it.
TEMP_MAX_AGE_S = 3600.0
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".pt", ".pth"})
_CHUNK = 1 << 20
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_TEMP_NAME = re.compile(r"^(\d+)-[0-9a-f]{32}$")


def local_dir(uri: str | None) -> Path | None:
    """The local directory ``uri`` names (a ``file://`` URL or a plain path), or None when
    it is remote or unset.

    >>> local_dir("file:///srv/niche/artifacts/sha256/3f/3f2a")
    PosixPath('/srv/niche/artifacts/sha256/3f/3f2a')
    """
    if uri is None:
        return None
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


def content_digest(files: Mapping[str, str]) -> str:
    """The digest of a set of files: sha256 over the sorted ``name:sha256`` lines.

    >>> content_digest({"config.json": "ab…", "head.safetensors": "cd…"})
    """
    joined = "\n".join(f"{name}:{files[name]}" for name in sorted(files))
    return hashlib.sha256(joined.encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A stored artifact: its digest, where it lives, its files (name -> sha256) and size in bytes."""

    digest: str
    uri: str
    files: dict[str, str] = field(hash=False)
    size: int


def _check_name(name: str, where: str) -> None:
    """Refuse names that could leave the artifact's directory or clash with the manifest."""
    if (
        not name
        or name in (".", "..", MANIFEST_FILE)
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.path.isabs(name)
    ):
        raise ArtifactError(
            f"{where}: refused file name {name!r} (artifact files are plain names in one "
            f"directory; {MANIFEST_FILE} is reserved)",
            path=where,
        )


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # 8-byte little-endian header length, then a JSON object: its first byte may be 0x80 too.
    return len(head) > 8 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size


def _refuse_pickle(name: str, head: bytes, size: int, opener: Callable[[], BinaryIO]) -> None:
    """Raise ArtifactError when the file is, or wraps, a pickle."""
    reason = None
    if Path(name).suffix.lower() in PICKLE_SUFFIXES:
        reason = "its suffix marks a pickle"
    elif head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        if not _looks_like_safetensors(head, size):
            reason = "it starts with the pickle protocol marker"
    elif head[:4] == b"PK\x03\x04":
        # torch.save writes a zip whose data.pkl holds the pickle.
        with opener() as stream:
            try:
                members = zipfile.ZipFile(stream).namelist()
            except zipfile.BadZipFile:
                members = []
        if any(Path(member).suffix.lower() in PICKLE_SUFFIXES for member in members):
            reason = "it is a zip archive holding a pickle"
    if reason is not None:
        raise ArtifactError(
            f"{name}: refused, {reason}; loading a pickle runs arbitrary code. Save weights as "
            "safetensors, ONNX, JSON or numpy arrays instead",
            path=name,
        )


def _default_locations(settings: Settings) -> tuple[str, Path]:
    return str(settings.get("NICHE_ARTIFACTS_URL")), settings.cache_dir / "artifacts"


class ArtifactStore:
    """Content-addressed artifacts under ``root``: a local path or any fsspec URL.

    ``root`` defaults to ``NICHE_ARTIFACTS_URL``; ``cache_dir`` (default
    ``NICHE_CACHE_DIR/artifacts``) holds verified downloads from remote roots; ``clock`` dates
    temp dirs for :meth:`gc`.

        >>> store = ArtifactStore("/srv/niche/artifacts")
        >>> digest = store.put_dir(Path("model")).digest
        >>> store.get_dir(digest)
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        cache_dir: str | Path | None = None,
        storage_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if root is None or cache_dir is None:
            default_root, default_cache_dir = _default_locations(Settings())
            root = default_root if root is None else root
            cache_dir = default_cache_dir if cache_dir is None else cache_dir
        self.root = str(root)
        self.cache_dir = Path(cache_dir)
        self.storage_options = dict(storage_options or {})
        self.clock = clock
        self._fs_and_path: tuple[fsspec.AbstractFileSystem, str] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, clock: Callable[[], float] = time.time
    ) -> ArtifactStore:
        """The store named by ``NICHE_ARTIFACTS_URL``, caching downloads under ``NICHE_CACHE_DIR``.

        >>> ArtifactStore.from_settings(Settings(home="/tmp/niche")).root
        '/tmp/niche/artifacts'
        """
        root, cache_dir = _default_locations(settings or Settings())
        return cls(root, cache_dir=cache_dir, clock=clock)

    # -- where things are ----------------------------------------------------------------

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec file system of ``root`` (resolved on first use)."""
        return self._resolve()[0]

    @property
    def is_local(self) -> bool:
        """Whether ``root`` is on the local disk (then reads are verified in place)."""
        return isinstance(self.fs, LocalFileSystem)

    def _resolve(self) -> tuple[fsspec.AbstractFileSystem, str]:
        if self._fs_and_path is None:
            try:
                fs, path = fsspec.core.url_to_fs(self.root, **self.storage_options)
            except (ImportError, ValueError) as exc:
                raise ArtifactError(f"artifact store {self.root!r}: {exc}", path=self.root) from exc
            self._fs_and_path = (fs, path.rstrip("/"))
        return self._fs_and_path

    def _path(self, *parts: str) -> str:
        return "/".join((self._resolve()[1], *parts))

    def _artifact_path(self, digest: str) -> str:
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ArtifactError(f"{digest!r} is not a sha256 digest (64 lower-case hex digits)")
        return self._path("sha256", digest[:2], digest)

    def uri(self, digest: str) -> str:
        """The URL of the directory that holds artifact ``digest``."""
        return str(self.fs.unstrip_protocol(self._artifact_path(digest)))

    # -- writing -------------------------------------------------------------------------

    def put_dir(self, local_dir: str | Path) -> Artifact:
        """Store the files of ``local_dir`` (flat: no subdirectories); idempotent."""
        directory = Path(local_dir)
        if not directory.is_dir():
            raise ArtifactError(f"{directory}: not a directory", path=directory)
        files: dict[str, Path] = {}
        for entry in sorted(directory.iterdir()):
            if not entry.is_file():
                raise ArtifactError(
                    f"{entry}: artifacts are flat directories of files; refused", path=entry
                )
            files[entry.name] = entry
        return self.put_files(files)

    def put_files(self, files: Mapping[str, str | Path]) -> Artifact:
        """Store local files under the given names (name -> local path); idempotent.

        >>> store.put_files({"head.safetensors": "out/w.safetensors", "config.json": "c.json"})
        """
        if not files:
            raise ArtifactError("an artifact needs at least one file")
        for name in files:
            _check_name(name, str(files[name]))
        for name, source in files.items():
            self._check_source(name, Path(source))

        fs = self.fs
        temp = self._path("tmp", f"{int(self.clock())}-{uuid.uuid4().hex}")
        fs.makedirs(temp, exist_ok=True)
        try:
            digests: dict[str, str] = {}
            size = 0
            for name in sorted(files):
                # Hash what is written, not a separate read: the source may change meanwhile.
                digests[name], written = self._copy_hashing(Path(files[name]), f"{temp}/{name}")
                size += written
            digest = content_digest(digests)
            manifest = {"digest": digest, "files": digests, "size": size}
            artifact = Artifact(digest=digest, uri=self.uri(digest), files=digests, size=size)
            if not self.exists(digest):
                self._commit(temp, digest, manifest)
        finally:
            if fs.exists(temp):
                fs.rm(temp, recursive=True)
        return artifact

    def _check_source(self, name: str, source: Path) -> None:
        try:
            size = source.stat().st_size
            with source.open("rb") as stream:
                head = stream.read(16)
        except OSError as exc:
            raise ArtifactError(f"{source}: cannot read ({exc})", path=source) from exc
        _refuse_pickle(name, head, size, lambda: source.open("rb"))

    def _copy_hashing(self, source: Path, target: str) -> tuple[str, int]:
        sha = hashlib.sha256()
        size = 0
        with source.open("rb") as fin, self.fs.open(target, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                sha.update(chunk)
                fout.write(chunk)
                size += len(chunk)
        return sha.hexdigest(), size

    def _commit(self, temp: str, digest: str, manifest: dict[str, Any]) -> None:
        """Move a complete temp dir into place; the manifest is the commit marker."""
        fs = self.fs
        final = self._artifact_path(digest)
        body = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        if self.is_local:
            Path(temp, MANIFEST_FILE).write_text(body)
            Path(final).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(temp, final)
            except OSError:
                # Another put of the same digest won the race: its copy is as good as ours.
                if not self.exists(digest):
                    raise
            return
        # Object stores have no atomic directory rename: move the files, then write the manifest.
        if fs.exists(final):
            fs.rm(final, recursive=True)
        fs.makedirs(final, exist_ok=True)
        for name in manifest["files"]:
            fs.mv(f"{temp}/{name}", f"{final}/{name}")
        with fs.open(f"{final}/{MANIFEST_FILE}", "w") as stream:
            stream.write(body)

    # -- reading -------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        """Whether artifact ``digest`` is stored completely (its manifest is written)."""
        return bool(self.fs.exists(f"{self._artifact_path(digest)}/{MANIFEST_FILE}"))

    def digests(self) -> set[str]:
        """The digests of every complete artifact in the store."""
        return {digest for digest in self._stored() if self.exists(digest)}

    def _stored(self) -> set[str]:
        """Digests with a directory under ``sha256/``, complete or not."""
        fs = self.fs
        base = self._path("sha256")
        if not fs.isdir(base):
            return set()
        found = set()
        for prefix in fs.ls(base, detail=False):
            if not fs.isdir(prefix):
                continue
            for entry in fs.ls(prefix, detail=False):
                name = str(entry).rstrip("/").rsplit("/", 1)[-1]
                if _DIGEST.match(name) and str(prefix).rstrip("/").endswith("/" + name[:2]):
                    found.add(name)
        return found

    def manifest(self, digest: str) -> dict[str, str]:
        """The files of artifact ``digest`` (name -> sha256), checked against the digest."""
        path = f"{self._artifact_path(digest)}/{MANIFEST_FILE}"
        try:
            with self.fs.open(path, "rb") as stream:
                data = json.loads(stream.read())
        except FileNotFoundError as exc:
            raise NotFoundError(f"no artifact {digest} in {self.root}") from exc
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: unreadable manifest ({exc})", path=path) from exc
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise ArtifactError(f"{path}: manifest has no valid 'files' table", path=path)
        for name in files:
            _check_name(name, path)
        actual = content_digest(files)
        if actual != digest:
            raise ChecksumMismatchError(
                f"artifact {digest}: {MANIFEST_FILE} (digest mismatch)",
                expected=digest,
                actual=actual,
            )
        return files

    def get_dir(self, digest: str, dest: str | Path | None = None) -> Path:
        """A local directory with the verified files of artifact ``digest``.

        A local store is verified in place and its directory returned; otherwise the files are
        downloaded (into ``dest``, or a cache dir reused on later calls) and verified first.
        With ``dest`` the files are always copied there (``dest`` must not exist yet).
        """
        files = self.manifest(digest)
        if dest is None and self.is_local:
            directory = Path(self._artifact_path(digest))
            self._verify_local(directory, digest, files)
            return directory
        target = Path(dest) if dest is not None else self.cache_dir / digest
        if dest is None and target.is_dir():
            with contextlib.suppress(ChecksumMismatchError, ArtifactError):
                self._verify_local(target, digest, files)
                return target
            shutil.rmtree(target)
        elif target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ArtifactError(
                f"{target}: exists and is not an empty directory; pass a new one", path=target
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        staging.mkdir()
        try:
            self._download_verified(digest, files, staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _download_verified(self, digest: str, files: Mapping[str, str], into: Path) -> None:
        source = self._artifact_path(digest)
        for name, expected in sorted(files.items()):
            sha = hashlib.sha256()
            try:
                with (
                    self.fs.open(f"{source}/{name}", "rb") as fin,
                    (into / name).open("wb") as fout,
                ):
                    while chunk := fin.read(_CHUNK):
                        sha.update(chunk)
                        fout.write(chunk)
            except FileNotFoundError as exc:
                raise ArtifactError(
                    f"artifact {digest}: file {name} is missing", path=f"{source}/{name}"
                ) from exc
            self._compare(digest, name, expected, sha.hexdigest())
        (into / MANIFEST_FILE).write_text(
            json.dumps({"digest": digest, "files": dict(files)}, indent=2, sort_keys=True) + "\n"
        )

    def _verify_local(self, directory: Path, digest: str, files: Mapping[str, str]) -> None:
        present = {p.name for p in directory.iterdir()} - {MANIFEST_FILE}
        missing = sorted(set(files) - present)
        extra = sorted(present - set(files))
        if missing or extra:
            raise ArtifactError(
                f"artifact {digest}: files differ from its manifest (missing: "
                f"{', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})",
                path=directory,
            )
        for name, expected in sorted(files.items()):
            sha = hashlib.sha256()
            with (directory / name).open("rb") as stream:
                while chunk := stream.read(_CHUNK):
                    sha.update(chunk)
            self._compare(digest, name, expected, sha.hexdigest())

    @staticmethod
    def _compare(digest: str, name: str, expected: str, actual: str) -> None:
        if actual != expected:
            raise ChecksumMismatchError(
                f"artifact {digest}: file {name}", expected=expected, actual=actual
            )

    # -- removing ------------------------------------------------------------------------

    def delete(self, digest: str) -> None:
        """Remove artifact ``digest`` (also a partly written one)."""
        path = self._artifact_path(digest)
        if not self.fs.exists(path):
            raise NotFoundError(f"no artifact {digest} in {self.root}")
        self.fs.rm(path, recursive=True)

    def gc(self, referenced: Iterable[str], *, dry_run: bool = False) -> list[str]:
        """Remove every artifact not in ``referenced`` and temp dirs of crashed puts.

        Returns what was (with ``dry_run``: would be) removed: digests, and ``tmp/<name>`` for
        temp dirs older than :data:`TEMP_MAX_AGE_S`. Do not run it while a put whose digest is
        not yet referenced is in flight: that artifact counts as unreferenced.

            >>> store.gc(registry.referenced_digests())
        """
        keep = set(referenced)
        removed = sorted(self._stored() - keep)
        stale = self._stale_temps()
        if not dry_run:
            for digest in removed:
                with contextlib.suppress(NotFoundError):
                    self.delete(digest)
            for name in stale:
                self.fs.rm(self._path("tmp", name), recursive=True)
        return removed + [f"tmp/{name}" for name in stale]

    def _stale_temps(self) -> list[str]:
        fs = self.fs
        base = self._path("tmp")
        if not fs.isdir(base):
            return []
        now = self.clock()
        stale = []
        for entry in fs.ls(base, detail=False):
            name = str(entry).rstrip("/").rsplit("/", 1)[-1]
            # Temp dirs are named by their creation time, so age needs no file-system mtime.
            match = _TEMP_NAME.match(name)
            if match and now - int(match.group(1)) > TEMP_MAX_AGE_S:
                stale.append(name)
        return sorted(stale)
