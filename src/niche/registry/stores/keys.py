"""Gateway API keys: created with a secret shown once, verified by its hash, revoked, charged.

>>> record, secret = registry.keys.create(scope="inference", budget_usd=10.0, name="ci")
>>> registry.keys.verify(secret) == record
True
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from niche.errors import NotFoundError, ValidationError
from niche.registry.models import ApiKeyRow
from niche.registry.records import KeyRecord
from niche.registry.stores.audit import write_event
from niche.registry.stores.base import Store
from niche.registry.validation import LISTED, nonempty, usd_amount

__all__ = ["KEY_PREFIX_CHARS", "KEY_SCOPES", "SECRET_PREFIX", "KeyStore"]

KEY_SCOPES: Final = ("inference", "admin")
"""Scopes of an API key: ``inference`` calls models, ``admin`` also manages the registry."""
SECRET_PREFIX: Final = "nk-"
KEY_PREFIX_CHARS: Final = 8


def _secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def key_record(row: ApiKeyRow) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scope=row.scope,
        budget_usd=row.budget_usd,
        spent_usd=row.spent_usd,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _key_row(session: Session, ref: int | str) -> ApiKeyRow:
    text = str(ref).strip()
    if isinstance(ref, bool) or not text:
        raise ValidationError(f"give a key's id or prefix, got {ref!r}")
    if isinstance(ref, int) or text.isdecimal():
        query = select(ApiKeyRow).where(ApiKeyRow.id == int(text))
    else:
        query = select(ApiKeyRow).where(ApiKeyRow.prefix.startswith(text, autoescape=True))
    rows = list(session.scalars(query.order_by(ApiKeyRow.id).with_for_update()))
    if len(rows) > 1:
        matches = ", ".join(f"{row.id} ({row.prefix})" for row in rows[:LISTED])
        raise ValidationError(f"key prefix {text!r} is ambiguous ({matches}); give the id")
    if not rows:
        raise NotFoundError(f"no API key with id or prefix {text!r} (see `niche keys list`)")
    return rows[0]


class KeyStore(Store):
    """The gateway's API keys (``registry.keys``)."""

    def create(
        self,
        *,
        scope: str,
        budget_usd: float | None = None,
        name: str | None = None,
        actor: str | None = None,
    ) -> tuple[KeyRecord, str]:
        """Create an API key; return its record and its secret, which is not kept anywhere.

        Only the secret's sha256 (to verify it) and its first 8 characters (to recognise it)
        are stored: show the secret to the user now, it cannot be recovered later.

            >>> record, secret = registry.keys.create(scope="inference", budget_usd=10.0)
            >>> secret[:3]
            'nk-'
        """
        if scope not in KEY_SCOPES:
            raise ValidationError(
                f"key scope must be one of {', '.join(KEY_SCOPES)}, got {scope!r}"
            )
        budget = usd_amount(budget_usd, "budget_usd")
        if name is not None:
            nonempty(name, "key name")
        who = self._actor(actor)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = self.database.now()
        with self.database.session(write=True) as session:
            row = ApiKeyRow(
                name=name,
                prefix=secret[:KEY_PREFIX_CHARS],
                secret_sha256=_secret_sha256(secret),
                scope=scope,
                budget_usd=budget,
                spent_usd=0.0,
                created_at=now,
                revoked_at=None,
            )
            session.add(row)
            session.flush()
            write_event(
                session,
                at=now,
                actor=who,
                action="key.created",
                subject=row.prefix,
                detail={"id": row.id, "name": name, "scope": scope, "budget_usd": budget},
            )
            return key_record(row), secret

    def verify(self, secret: str) -> KeyRecord | None:
        """The key whose secret this is, or None when it is unknown or revoked.

        A budget is not checked here: see :attr:`KeyRecord.exhausted`.

            >>> registry.keys.verify(request_bearer_token)
        """
        if not isinstance(secret, str) or not secret:
            return None
        with self.database.session() as session:
            row = session.scalars(
                select(ApiKeyRow).where(
                    ApiKeyRow.secret_sha256 == _secret_sha256(secret),
                    ApiKeyRow.revoked_at.is_(None),
                )
            ).one_or_none()
            return key_record(row) if row is not None else None

    def all(self) -> list[KeyRecord]:
        """Every API key, revoked ones included, oldest first.

        >>> [key.prefix for key in registry.keys.all()]
        """
        with self.database.session() as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))
            return [key_record(row) for row in rows]

    def revoke(self, ref: int | str, *, actor: str | None = None) -> KeyRecord:
        """Revoke a key by id (``3``, ``"3"``) or by its unique prefix (``"nk-AbCde"``).

        Revoking a revoked key changes nothing (and writes nothing) and returns it as it is.

            >>> registry.keys.revoke("nk-AbCde").revoked
            True
        """
        who = self._actor(actor)
        now = self.database.now()
        with self.database.session(write=True) as session:
            row = _key_row(session, ref)
            if row.revoked_at is None:
                row.revoked_at = now
                write_event(
                    session,
                    at=now,
                    actor=who,
                    action="key.revoked",
                    subject=row.prefix,
                    detail={"id": row.id, "name": row.name, "scope": row.scope},
                )
                session.flush()
            return key_record(row)

    def add_spend(self, key_id: int, usd: float) -> KeyRecord:
        """Add ``usd`` to a key's spend atomically (concurrent calls all count); return the key.

        >>> registry.keys.add_spend(record.id, 0.0021).spent_usd
        """
        amount = usd_amount(usd, "usd")
        with self.database.session(write=True) as session:
            result = session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id)
                .values(spent_usd=ApiKeyRow.spent_usd + amount),
                execution_options={"synchronize_session": False},
            )
            if getattr(result, "rowcount", 0) != 1:
                raise NotFoundError(f"no API key with id {key_id!r}")
            row = session.scalars(
                select(ApiKeyRow)
                .where(ApiKeyRow.id == key_id)
                .execution_options(populate_existing=True)
            ).one()
            return key_record(row)
