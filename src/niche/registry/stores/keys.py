"""Gateway API keys: created with a secret shown once, verified by its hash, revoked, charged.

>>> record, secret = registry.keys.create(scope="inference", budget_usd=10.0, name="ci")
>>> registry.keys.verify(secret) == record
True

A request on a budgeted key reserves its worst-case cost before it runs and settles its
actual cost after (:meth:`KeyStore.reserve`, :meth:`KeyStore.settle`): the check and the
hold are one transaction on the key's locked row, so gateway workers sharing the database
never admit more than the budget allows. A reservation nobody settles (a crashed worker's)
lapses at its expiry.

A dashboard session (:meth:`KeyStore.open_session`) is a stateless token, signed with
HMAC-SHA256 keyed by the admin key's stored secret hash: any gateway worker sharing the
database can check it, it carries no secret, and it dies with its key's revocation.

>>> record, token = registry.keys.open_session(secret, ttl_s=28_800)
>>> registry.keys.session(token) == record
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, NamedTuple

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from niche.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from niche.registry.models import ApiKeyRow, KeyReservationRow
from niche.registry.records import KeyRecord, KeyReservation
from niche.registry.stores.audit import write_event
from niche.registry.stores.base import Store
from niche.registry.validation import LISTED, nonempty, usd_amount

__all__ = ["KEY_PREFIX_CHARS", "KEY_SCOPES", "SECRET_PREFIX", "KeyStore", "Settlement"]

KEY_SCOPES: Final = ("inference", "admin")
"""Scopes of an API key: ``inference`` calls models, ``admin`` also manages the registry."""
SECRET_PREFIX: Final = "nk-"
KEY_PREFIX_CHARS: Final = 8


class Settlement(NamedTuple):
    """What a finished request cost a key: ``usd`` is added to its spend, and its
    reservation (None: it had none, e.g. it ran while the database was down) is released."""

    key_id: int
    usd: float
    reservation_id: int | None = None


def _amount(usd: float, what: str = "usd") -> float:
    amount = usd_amount(usd, what)
    if amount is None:
        raise ValidationError(f"{what} must be a number of US dollars, got None", param=what)
    return amount


def _secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _session_signature(secret_sha256: str, key_id: int, expires: int) -> str:
    # Keyed by the stored hash, not the secret (which is never stored): any worker can sign
    # and check, and a token names no secret. The purpose prefix keeps it a session token.
    message = f"niche-ui-session:{key_id}:{expires}".encode("ascii")
    return hmac.new(secret_sha256.encode("ascii"), message, hashlib.sha256).hexdigest()


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

    def open_session(
        self, secret: str, ttl_s: float, *, now: datetime | None = None
    ) -> tuple[KeyRecord, str]:
        """A dashboard session for the admin key whose secret this is: its record and a
        token valid for ``ttl_s`` seconds (``{key id}.{expiry, epoch s}.{HMAC-SHA256}``).

        Raises :class:`~niche.errors.AuthenticationError` for an unknown or revoked key and
        :class:`~niche.errors.PermissionDeniedError` for a key without the ``admin`` scope.

            >>> record, token = registry.keys.open_session(secret, ttl_s=28_800)
        """
        if ttl_s <= 0:
            raise ValidationError(f"ttl_s must be positive, got {ttl_s!r}", param="ttl_s")
        if not isinstance(secret, str) or not secret.strip():
            raise AuthenticationError("give an admin API key (see `niche keys create`)")
        digest = _secret_sha256(secret.strip())
        with self.database.session() as session:
            row = session.scalars(
                select(ApiKeyRow).where(
                    ApiKeyRow.secret_sha256 == digest, ApiKeyRow.revoked_at.is_(None)
                )
            ).one_or_none()
            if row is None:
                raise AuthenticationError("invalid API key (unknown or revoked)")
            if row.scope != "admin":
                raise PermissionDeniedError(
                    f"key {row.prefix}… has scope {row.scope!r}; the dashboard needs an 'admin' key"
                )
            expires = int((now or self.database.now()).timestamp() + ttl_s)
            token = f"{row.id}.{expires}.{_session_signature(digest, row.id, expires)}"
            return key_record(row), token

    def session(self, token: str, *, now: datetime | None = None) -> KeyRecord | None:
        """The admin key of a token :meth:`open_session` gave, or None when the token is
        malformed, forged, expired, or its key revoked.

            >>> registry.keys.session(cookie_token)
        """
        if not isinstance(token, str):
            return None
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdecimal() or not parts[1].isdecimal():
            return None
        key_id, expires, signature = int(parts[0]), int(parts[1]), parts[2]
        if (now or self.database.now()).timestamp() >= expires:
            return None
        with self.database.session() as session:
            row = session.scalars(
                select(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            ).one_or_none()
            if row is None or row.scope != "admin":
                return None
            expected = _session_signature(row.secret_sha256, row.id, expires)
            if not hmac.compare_digest(
                expected.encode("ascii"), signature.encode("ascii", "replace")
            ):
                return None
            return key_record(row)

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

    def reserve(self, key_id: int, usd: float, *, ttl_s: float) -> KeyReservation:
        """Hold ``usd`` of a key's budget for a request about to run, if any is left.

        Granted while the key's spend plus what requests in flight hold is below its budget
        (so a budget is overshot by at most the last admitted request's worst case); a key
        without a budget is always granted. The reservation lapses after ``ttl_s`` seconds
        if nobody settles it. Refused reservations write nothing.

            >>> held = registry.keys.reserve(key.id, 0.003, ttl_s=600.0)
            >>> registry.keys.settle([Settlement(key.id, 0.0012, held.id)])
        """
        amount = _amount(usd)
        if ttl_s <= 0:
            raise ValidationError(f"ttl_s must be positive, got {ttl_s!r}", param="ttl_s")
        now = self.database.now()
        with self.database.session(write=True) as session:
            # The key's row lock serialises its reservations (SQLite: the write lock).
            key = session.scalars(
                select(ApiKeyRow).where(ApiKeyRow.id == key_id).with_for_update()
            ).one_or_none()
            if key is None:
                raise NotFoundError(f"no API key with id {key_id!r}")
            session.execute(
                delete(KeyReservationRow).where(
                    KeyReservationRow.key_id == key_id, KeyReservationRow.expires_at <= now
                ),
                execution_options={"synchronize_session": False},
            )
            held = session.scalar(
                select(func.coalesce(func.sum(KeyReservationRow.amount_usd), 0.0)).where(
                    KeyReservationRow.key_id == key_id
                )
            )
            held = float(held or 0.0)
            if key.budget_usd is not None and key.spent_usd + held >= key.budget_usd:
                return KeyReservation(
                    None, key_id, amount, key.budget_usd, key.spent_usd, held, None
                )
            row = KeyReservationRow(
                key_id=key_id,
                amount_usd=amount,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_s),
            )
            session.add(row)
            session.flush()
            return KeyReservation(
                row.id,
                key_id,
                amount,
                key.budget_usd,
                key.spent_usd,
                held + amount,
                row.expires_at,
            )

    def settle(self, settlements: Iterable[Settlement]) -> None:
        """Add each settlement's cost to its key's spend and release its reservation, all in
        one transaction (a reservation that lapsed already is simply gone).

            >>> registry.keys.settle([Settlement(key.id, 0.0012, held.id)])
        """
        items = [Settlement(s.key_id, _amount(s.usd), s.reservation_id) for s in settlements]
        if not items:
            return
        with self.database.session(write=True) as session:
            # Keys first, then reservations (reserve's order), so two writers cannot deadlock.
            for key_id in sorted({s.key_id for s in items}):
                usd = sum(s.usd for s in items if s.key_id == key_id)
                session.execute(
                    update(ApiKeyRow)
                    .where(ApiKeyRow.id == key_id)
                    .values(spent_usd=ApiKeyRow.spent_usd + usd),
                    execution_options={"synchronize_session": False},
                )
            held = [s.reservation_id for s in items if s.reservation_id is not None]
            if held:
                session.execute(
                    delete(KeyReservationRow).where(KeyReservationRow.id.in_(held)),
                    execution_options={"synchronize_session": False},
                )

    def reserved(self, key_id: int) -> float:
        """What requests in flight hold of a key's budget now (lapsed reservations aside).

        >>> registry.keys.reserved(key.id)
        0.0
        """
        now = self.database.now()
        with self.database.session() as session:
            held = session.scalar(
                select(func.coalesce(func.sum(KeyReservationRow.amount_usd), 0.0)).where(
                    KeyReservationRow.key_id == key_id, KeyReservationRow.expires_at > now
                )
            )
            return float(held or 0.0)
