"""Hashes of the dashboard's passwords and token, kept in the settings instead of the secrets.

Format: ``scrypt$N$r$p$SALT$HASH`` (salt and hash in URL-safe base64), made by
:func:`hashlib.scrypt`. Make one with::

    python -m service.passwords            # asks for the secret twice
    printf '%s' "$SECRET" | python -m service.passwords --stdin
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass

__all__ = ["PasswordHash", "hash_secret", "main", "parse_hash", "verify_secret"]

_SCHEME = "scrypt"
_N, _R, _P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed ``scrypt$N$r$p$SALT$HASH`` string."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_hash(text: str) -> PasswordHash:
    """Parse a stored hash; ``ValueError`` saying what is wrong."""
    parts = text.strip().split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise ValueError(
            "is not a password hash (expected scrypt$N$r$p$SALT$HASH, made by "
            "'python -m service.passwords')"
        )
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError as error:
        raise ValueError(f"is not a valid scrypt hash ({error})") from error
    if n < 2**10 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ValueError(f"has unusable scrypt parameters N={n} r={r} p={p}")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("has a salt or hash that is too short")
    return PasswordHash(n, r, p, salt, digest)


def hash_secret(secret: str) -> str:
    """The stored form of ``secret`` (a fresh random salt each time)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=32
    )
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: PasswordHash) -> bool:
    """True when ``secret`` hashes to ``stored`` (constant-time comparison)."""
    digest = hashlib.scrypt(
        secret.encode("utf-8"),
        salt=stored.salt,
        n=stored.n,
        r=stored.r,
        p=stored.p,
        maxmem=_MAXMEM,
        dklen=len(stored.digest),
    )
    return hmac.compare_digest(digest, stored.digest)


def main(argv: list[str] | None = None) -> int:
    """Print the hash of a secret read from the terminal (twice) or standard input."""
    parser = argparse.ArgumentParser(
        prog="python -m service.passwords",
        description="Print the hash of a dashboard password or token, for http.users "
        "(NAME:HASH) or http.token_hash in the settings.",
    )
    parser.add_argument("--stdin", action="store_true", help="read the secret from stdin")
    args = parser.parse_args(argv)
    if args.stdin:
        secret = sys.stdin.read().rstrip("\n")
    else:
        secret = getpass.getpass("secret: ")
        if getpass.getpass("again: ") != secret:
            print("the two entries differ; nothing printed", file=sys.stderr)
            return 2
    if len(secret) < 8:
        print("use at least 8 characters; nothing printed", file=sys.stderr)
        return 2
    print(hash_secret(secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
