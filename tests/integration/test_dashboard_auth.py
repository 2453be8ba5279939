"""The dashboard's credentials and CSRF rules, without a node (issue 14)."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from service.errors import SettingsError
from service.passwords import hash_secret, parse_hash, verify_secret
from service.settings.model import HttpSettings
from service.web.auth import Authenticator, csrf_problem
from tests.helpers.node_harness import REPO

SECRET = "s3cret-pass"
STORED = hash_secret(SECRET)


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_hash_round_trip_and_fresh_salt() -> None:
    parsed = parse_hash(STORED)
    assert STORED.startswith("scrypt$16384$8$1$")
    assert verify_secret(SECRET, parsed)
    assert not verify_secret(SECRET + "x", parsed)
    assert hash_secret(SECRET) != STORED  # a new salt each time


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("plain-password", "is not a password hash"),
        ("scrypt$16384$8$1$c2FsdA$aGFzaA", "too short"),
        ("scrypt$1000$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "unusable scrypt parameters"),
        ("scrypt$x$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "is not a valid scrypt hash"),
    ],
)
def test_bad_hashes_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hash(text)


def test_http_settings_name_the_bad_entry() -> None:
    with pytest.raises(SettingsError) as error:
        HttpSettings(users=("alice:nothash", f"alice:{STORED}", "nocolon"), token_hash="x")
    text = str(error.value)
    assert "users[0] (alice): the hash is not a password hash" in text
    assert "users[1]: user 'alice' is configured twice" in text
    assert "users[2] must be NAME:HASH" in text
    assert "token_hash is not a password hash" in text


def test_authorization_headers() -> None:
    auth = Authenticator(HttpSettings(users=(f"alice:{STORED}",), token_hash=STORED))
    assert auth.configured
    basic = auth.header(_basic(f"alice:{SECRET}"))
    assert basic is not None and basic.name == "alice"
    assert auth.header(_basic(f"alice:{SECRET}")) == basic  # remembered, same answer
    bearer = auth.header(f"Bearer {SECRET}")
    assert bearer is not None and bearer.name == "token"
    assert auth.header(_basic("alice:wrong")) is None
    assert auth.header(_basic(f"bob:{SECRET}")) is None
    assert auth.header(_basic(f"alice{SECRET}")) is None  # no colon
    assert auth.header("Basic !!!not-base64") is None
    assert auth.header("Digest abc") is None
    assert auth.header(None) is None
    assert not Authenticator(HttpSettings()).configured


def test_csrf_rules() -> None:
    ok = "t" * 43
    assert csrf_problem(ok, ok, "http://node:8080", None, "node:8080") is None
    assert csrf_problem(ok, ok, None, "http://node:8080/", "node:8080") is None
    assert csrf_problem(ok, ok, None, None, "node:8080") is None  # token alone
    assert "security token" in str(csrf_problem(ok, None, None, None, "node:8080"))
    assert "security token" in str(csrf_problem(None, ok, None, None, "node:8080"))
    assert "security token" in str(csrf_problem(ok, "u" * 43, None, None, "node:8080"))
    foreign = csrf_problem(ok, ok, "http://evil.example", None, "node:8080")
    assert foreign == "the request came from another site (evil.example)"
    assert "another site" in str(csrf_problem(ok, ok, None, "http://x.test/p", "node:8080"))
    assert "opaque origin" in str(csrf_problem(ok, ok, "null", None, "node:8080"))


def test_hash_tool_prints_a_usable_hash() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service.passwords", "--stdin"],
        input=SECRET,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert verify_secret(SECRET, parse_hash(done.stdout.strip()))
    short = subprocess.run(
        [sys.executable, "-m", "service.passwords", "--stdin"],
        input="short",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert short.returncode == 2
    assert "at least 8 characters" in short.stderr
