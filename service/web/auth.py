"""Who is asking, and whether a form was sent by the dashboard itself.

Credentials come from ``[http]``: accounts ``users`` (``NAME:HASH``) and one
``token_hash``. A request is authenticated by

- the dashboard's session cookie (set by the login form; signed, HttpOnly,
  SameSite=Strict, valid ``session_hours``),
- ``Authorization: Basic`` with an account's name and password, or
- ``Authorization: Bearer TOKEN`` (the principal is then called ``token``).

Checked secrets are scrypt hashes (:mod:`service.passwords`); a secret that
passed is remembered (its keyed SHA-256, never the secret) so that a scraper's
every request does not cost an scrypt.

Actions are POST forms: each carries the session's CSRF token (a random value
kept in the signed session cookie, compared in constant time), and a request
whose ``Origin`` (or, without it, ``Referer``) names another site is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.passwords import PasswordHash, parse_hash, verify_secret
from service.settings.model import HttpSettings

__all__ = ["TOKEN_PRINCIPAL", "Authenticator", "Principal", "csrf_problem", "new_csrf_token"]

#: The name an action is logged with when it came with the token.
TOKEN_PRINCIPAL = "token"
_CACHE_LIMIT = 256


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user name (or ``token``) and how it was proven."""

    name: str
    via: str  # session | basic | bearer | login


class Authenticator:
    """Checks names, passwords and the token against the hashes of ``[http]``."""

    def __init__(self, http: HttpSettings) -> None:
        self._users: dict[str, PasswordHash] = {}
        for entry in http.users:
            name, _, stored = entry.partition(":")
            self._users[name] = parse_hash(stored)
        self._token = parse_hash(http.token_hash) if http.token_hash else None
        self._key = secrets.token_bytes(32)
        self._passed: dict[bytes, str] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        """True when at least one account or the token is configured."""
        return bool(self._users) or self._token is not None

    def _remembered(self, kind: str, secret: str) -> tuple[bytes, str | None]:
        mark = hmac.new(self._key, f"{kind}\0{secret}".encode(), hashlib.sha256).digest()
        with self._lock:
            return mark, self._passed.get(mark)

    def _remember(self, mark: bytes, name: str) -> None:
        with self._lock:
            if len(self._passed) >= _CACHE_LIMIT:
                self._passed.clear()
            self._passed[mark] = name

    def password(self, name: str, password: str) -> Principal | None:
        """The user when ``name`` and ``password`` match an account."""
        stored = self._users.get(name)
        if stored is None:
            return None
        mark, known = self._remembered(f"user:{name}", password)
        if known is None:
            if not verify_secret(password, stored):
                return None
            self._remember(mark, name)
        return Principal(name, "basic")

    def token(self, token: str) -> Principal | None:
        """The token principal when ``token`` matches ``token_hash``."""
        if self._token is None or not token:
            return None
        mark, known = self._remembered("token", token)
        if known is None:
            if not verify_secret(token, self._token):
                return None
            self._remember(mark, TOKEN_PRINCIPAL)
        return Principal(TOKEN_PRINCIPAL, "bearer")

    def header(self, value: str | None) -> Principal | None:
        """The principal of an ``Authorization`` header (``None``: absent or wrong)."""
        if not value:
            return None
        scheme, _, credentials = value.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self.token(credentials.strip())
        if scheme != "basic":
            return None
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, colon, password = decoded.partition(":")
        return self.password(name, password) if colon else None


def new_csrf_token() -> str:
    """A fresh random CSRF token."""
    return secrets.token_urlsafe(32)


def csrf_problem(
    expected: str | None, sent: str | None, origin: str | None, referer: str | None, host: str
) -> str | None:
    """Why a POST is refused as a possible cross-site request (``None``: accepted).

    ``host`` is the request's ``Host`` header: the form must come from a page
    served under it (``Origin``, else ``Referer``; a request with neither is
    judged on the token alone, as older clients send neither).
    """
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        return "the form's security token is missing or stale (reload the page and try again)"
    source = origin if origin and origin != "null" else referer
    if source and urlsplit(source).netloc.lower() != host.lower():
        return f"the request came from another site ({urlsplit(source).netloc})"
    if origin == "null":
        return "the request came from an opaque origin"
    return None
