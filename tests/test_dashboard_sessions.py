"""Dashboard sessions: stateless tokens signed by the registry with an admin key's stored hash
(SQLite and PostgreSQL), so any gateway worker can check one and a revoked key's die."""

from __future__ import annotations

from datetime import timedelta

import pytest

from niche.errors import AuthenticationError, PermissionDeniedError, ValidationError
from tests.clocks import START


def test_an_admin_key_opens_a_session_its_token_names_no_secret(registry) -> None:
    record, secret = registry.keys.create(scope="admin", name="ana")
    opened, token = registry.keys.open_session(secret, 600)
    assert opened == record
    assert secret not in token and secret[3:] not in token
    key_id, expires, signature = token.split(".")
    assert int(key_id) == record.id and len(signature) == 64
    assert int(expires) > 0
    assert registry.keys.session(token) == record


def test_an_expired_token_fails(registry) -> None:
    _, secret = registry.keys.create(scope="admin")
    _, token = registry.keys.open_session(secret, 600, now=START)
    assert registry.keys.session(token, now=START + timedelta(seconds=599)) is not None
    assert registry.keys.session(token, now=START + timedelta(seconds=600)) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),  # another signature
        lambda t: ".".join([t.split(".")[0], str(int(t.split(".")[1]) + 86_400), t.split(".")[2]]),
        lambda t: t.replace(".", ":"),
        lambda t: "",
        lambda t: t + ".x",
        lambda t: "nk-not-a-token",
    ],
    ids=["signature", "later-expiry", "malformed", "empty", "extra-part", "a-key"],
)
def test_a_tampered_token_fails(registry, tamper) -> None:
    _, secret = registry.keys.create(scope="admin")
    _, token = registry.keys.open_session(secret, 600)
    assert registry.keys.session(tamper(token)) is None


def test_a_token_of_one_key_does_not_open_another(registry) -> None:
    first, one = registry.keys.create(scope="admin")
    second, _ = registry.keys.create(scope="admin")
    _, token = registry.keys.open_session(one, 600)
    _, expires, signature = token.split(".")
    assert registry.keys.session(f"{second.id}.{expires}.{signature}") is None
    assert registry.keys.session(token) == first


def test_a_revoked_keys_sessions_die(registry) -> None:
    record, secret = registry.keys.create(scope="admin")
    _, token = registry.keys.open_session(secret, 600)
    registry.keys.revoke(record.id)
    assert registry.keys.session(token) is None
    with pytest.raises(AuthenticationError, match="unknown or revoked"):
        registry.keys.open_session(secret, 600)


def test_only_an_admin_key_opens_a_session(registry) -> None:
    _, secret = registry.keys.create(scope="inference")
    with pytest.raises(PermissionDeniedError, match="needs an 'admin' key"):
        registry.keys.open_session(secret, 600)
    with pytest.raises(AuthenticationError):
        registry.keys.open_session("nk-unknown", 600)
    with pytest.raises(AuthenticationError):
        registry.keys.open_session("", 600)
    _, admin = registry.keys.create(scope="admin")
    with pytest.raises(ValidationError, match="ttl_s"):
        registry.keys.open_session(admin, 0)
