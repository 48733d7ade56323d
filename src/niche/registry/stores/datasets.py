"""Dataset versions: their files in the artifact store, their rows in the database.

    >>> record = registry.datasets.register(version)   # files → artifact store, then the row
    >>> registry.datasets.load(record.fingerprint[:8]).splits["test"]

The files go through the artifact store (any fsspec URL, content-addressed, verified on
read), so a registry shared by a team names files every member can fetch, not a directory on
one laptop. Versions registered before that (a local path in ``uri``) still load.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from niche.errors import DatasetNotFoundError, NotFoundError
from niche.registry.models import DatasetVersionRow
from niche.registry.records import DatasetRecord
from niche.registry.stores.audit import write_event
from niche.registry.stores.base import Database, Store, insert_ignoring_conflict
from niche.registry.validation import LISTED, json_value, listing
from niche.settings import Settings

if TYPE_CHECKING:
    from niche.data.version import DatasetVersion
    from niche.registry.artifacts import ArtifactStore

__all__ = ["MIN_PREFIX", "DatasetStore", "dataset_record"]

_HEX_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")
MIN_PREFIX: Final = 6
"""The fewest hex digits of a fingerprint that name a dataset version."""
_SUBJECT_CHARS = 12


def _digest_of(directory: Path) -> str:
    """The artifact digest ``put_dir(directory)`` will give, computed without storing."""
    from niche.registry.artifacts import content_digest

    return content_digest(
        {
            entry.name: hashlib.sha256(entry.read_bytes()).hexdigest()
            for entry in directory.iterdir()
        }
    )


def dataset_record(row: DatasetVersionRow) -> DatasetRecord:
    return DatasetRecord(
        fingerprint=row.fingerprint,
        source=row.source,
        report=row.report,
        splits=row.splits,
        uri=row.uri,
        created_at=row.created_at,
    )


def _dataset_row(session: Session, ref: str) -> DatasetVersionRow:
    prefix = ref.strip().lower() if isinstance(ref, str) else ""
    if not _HEX_PREFIX.match(prefix):
        raise DatasetNotFoundError(
            f"dataset version {ref!r}: give its fingerprint or a unique prefix of at "
            f"least {MIN_PREFIX} hex digits"
        )
    rows = list(
        session.scalars(
            select(DatasetVersionRow)
            .where(DatasetVersionRow.fingerprint.startswith(prefix, autoescape=True))
            .order_by(DatasetVersionRow.fingerprint)
            .limit(LISTED)
        )
    )
    if len(rows) == 1:
        return rows[0]
    if rows:
        matches = ", ".join(row.fingerprint[:16] for row in rows)
        raise DatasetNotFoundError(
            f"dataset version {prefix!r} is ambiguous ({matches}); give more digits"
        )
    known = list(
        session.scalars(
            select(DatasetVersionRow.fingerprint)
            .order_by(DatasetVersionRow.created_at.desc())
            .limit(LISTED + 1)
        )
    )
    shown = listing([fp[:12] for fp in known], "none registered yet")
    raise DatasetNotFoundError(f"no dataset version {prefix!r} (latest: {shown})")


class DatasetStore(Store):
    """The registry's dataset versions (``registry.datasets``).

    ``artifacts`` holds their files; None builds the store named by ``NICHE_ARTIFACTS_URL``
    of ``settings`` on first use.
    """

    def __init__(
        self,
        database: Database,
        *,
        actor: str | None = None,
        artifacts: ArtifactStore | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__(database, actor=actor)
        self._artifacts = artifacts
        self._settings = settings

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store that holds the files of dataset versions."""
        if self._artifacts is None:
            from niche.registry.artifacts import ArtifactStore

            self._artifacts = ArtifactStore.from_settings(self._settings or Settings())
        return self._artifacts

    def register(self, version: DatasetVersion, *, actor: str | None = None) -> DatasetRecord:
        """Store ``version``'s files in the artifact store and register it; idempotent.

        A version already registered with files is returned as it is (nothing is written);
        one registered without them (or with a local path only) gets them now.

            >>> registry.datasets.register(version).uri
            'file:///srv/niche/artifacts/sha256/3f/3f2a…'
        """
        who = self._actor(actor)
        with self.database.session() as session:
            stored = session.scalars(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.fingerprint == version.fingerprint
                )
            ).one_or_none()
            if stored is not None and stored.artifact_digest is not None:
                return dataset_record(stored)
        now = self.database.now()
        # Files first, then the row and its event in one transaction: never a row naming files
        # that are not there. Files this call stored are removed again when the transaction
        # does not commit (an error, Ctrl-C), so an interrupted registration leaves nothing.
        with tempfile.TemporaryDirectory(prefix="niche-dataset-") as scratch:
            directory = version.save(Path(scratch) / "dataset", created_at=now)
            fresh = not self.artifacts.exists(_digest_of(directory))
            artifact = self.artifacts.put_dir(directory)
        try:
            return self._insert(version, now, who, artifact.digest, artifact.uri)
        except BaseException:
            if fresh:
                with contextlib.suppress(NotFoundError):
                    self.artifacts.delete(artifact.digest)
            raise

    def _insert(
        self, version: DatasetVersion, now: datetime, who: str, digest: str, uri: str
    ) -> DatasetRecord:
        values = self._values(version, now) | {"uri": uri, "artifact_digest": digest}
        detail = {
            "fingerprint": version.fingerprint,
            "source": version.source,
            "splits": values["splits"],
            "artifact_digest": digest,
            "uri": uri,
        }
        with self.database.session(write=True) as session:
            inserted = insert_ignoring_conflict(session, DatasetVersionRow, values, "fingerprint")
            row = self._row(session, version.fingerprint)
            if inserted:
                self._event(session, now, who, "dataset.registered", row, detail)
            elif row.artifact_digest is None:
                row.artifact_digest = digest
                row.uri = uri
                self._event(session, now, who, "dataset.files_added", row, detail)
                session.flush()
            return dataset_record(row)

    def register_path(
        self,
        version: DatasetVersion,
        *,
        uri: str | os.PathLike[str] | None = None,
        actor: str | None = None,
    ) -> DatasetRecord:
        """Record a dataset version whose files are at ``uri`` (a local directory), if any.

        Idempotent by fingerprint; a later call can fill in ``uri`` when the first one had none.
        Prefer :meth:`register`, which stores the files in the artifact store.

            >>> registry.datasets.register_path(version, uri=".niche/datasets/3f2a9c0d")
        """
        who = self._actor(actor)
        location = os.fspath(uri) if uri is not None else None
        now = self.database.now()
        values = self._values(version, now) | {"uri": location}
        with self.database.session(write=True) as session:
            inserted = insert_ignoring_conflict(session, DatasetVersionRow, values, "fingerprint")
            row = self._row(session, version.fingerprint)
            detail = {
                "fingerprint": version.fingerprint,
                "source": version.source,
                "splits": values["splits"],
                "uri": location,
            }
            if inserted:
                self._event(session, now, who, "dataset.registered", row, detail)
            elif row.uri is None and location is not None:
                row.uri = location
                self._event(session, now, who, "dataset.files_added", row, detail)
                session.flush()
            return dataset_record(row)

    def get(self, ref: str) -> DatasetRecord:
        """The dataset version whose fingerprint is ``ref`` or starts with it (≥ 6 hex digits).

        >>> registry.datasets.get("3f2a9c").source
        'banking77'
        """
        with self.database.session() as session:
            return dataset_record(_dataset_row(session, ref))

    def all(self) -> list[DatasetRecord]:
        """Every registered dataset version, oldest first."""
        with self.database.session() as session:
            rows = session.scalars(
                select(DatasetVersionRow).order_by(
                    DatasetVersionRow.created_at, DatasetVersionRow.id
                )
            )
            return [dataset_record(row) for row in rows]

    def load(self, ref: str) -> DatasetVersion:
        """The rows of a registered dataset version, fetched and verified.

        Files in the artifact store are checked against their digest and the rows against
        the fingerprint; a version registered with a local path is read from that path.

            >>> registry.datasets.load("3f2a9c").splits["train"]
        """
        from niche.data.version import DatasetVersion
        from niche.registry.artifacts import local_dir

        with self.database.session() as session:
            row = _dataset_row(session, ref)
            digest, uri, fingerprint = row.artifact_digest, row.uri, row.fingerprint
        if digest is not None:
            return DatasetVersion.load(self._fetch(digest, uri))
        path = local_dir(uri)
        if path is None:
            raise NotFoundError(
                f"dataset version {fingerprint[:16]} is registered without files; "
                "curate it again with `niche data curate`"
            )
        return DatasetVersion.load(path)

    def artifact_digests(self) -> set[str]:
        """Artifact digests of every dataset version's files (what ``niche gc`` keeps)."""
        with self.database.session() as session:
            digests = session.scalars(
                select(DatasetVersionRow.artifact_digest)
                .where(DatasetVersionRow.artifact_digest.is_not(None))
                .distinct()
            )
            return {digest for digest in digests if digest is not None}

    # -- internals -------------------------------------------------------------------------

    def _fetch(self, digest: str, uri: str | None) -> Path:
        """A verified local copy of artifact ``digest``: from this registry's artifact store,
        else from the store it was registered in (content-addressed: either will do)."""
        from niche.registry.artifacts import ArtifactStore

        store = self.artifacts
        if not store.exists(digest) and uri is not None and "/sha256/" in uri:
            store = ArtifactStore(uri.rsplit("/sha256/", 1)[0], cache_dir=store.cache_dir)
        return store.get_dir(digest)

    @staticmethod
    def _values(version: DatasetVersion, now: datetime) -> dict[str, Any]:
        return {
            "fingerprint": version.fingerprint,
            "source": version.source,
            "report": json_value(version.report.to_dict(), "report"),
            "splits": {split: len(rows) for split, rows in version.splits.items()},
            "created_at": now,
        }

    @staticmethod
    def _row(session: Session, fingerprint: str) -> DatasetVersionRow:
        return session.scalars(
            select(DatasetVersionRow).where(DatasetVersionRow.fingerprint == fingerprint)
        ).one()

    @staticmethod
    def _event(
        session: Session,
        now: datetime,
        actor: str,
        action: str,
        row: DatasetVersionRow,
        detail: dict[str, Any],
    ) -> None:
        write_event(
            session,
            at=now,
            actor=actor,
            action=action,
            subject=row.fingerprint[:_SUBJECT_CHARS],
            detail=detail,
        )
