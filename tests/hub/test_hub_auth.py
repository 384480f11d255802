"""Token verification (HS256, RS256), where tokens travel, API keys, channel grants."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hub_support import SECRET, token

from tether.hub import Credentials, ErrorCode, HubError, TokenVerifier
from tether.hub.auth import api_key_matches, token_from_handshake
from tether.protocol.headers import Headers


def rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def refused(verifier: TokenVerifier, value: str) -> int:
    with pytest.raises(HubError) as caught:
        verifier.verify(value)
    return caught.value.code


def test_hs256_claims() -> None:
    verifier = TokenVerifier(secret=SECRET)
    credentials = verifier.verify(token("alice", channels=["chat:*"], info={"name": "Alice"}))
    assert credentials.user == "alice"
    assert credentials.channels == ("chat:*",)
    assert credentials.info == {"name": "Alice"}
    assert credentials.ttl() is not None and 3590 <= credentials.ttl() <= 3600  # type: ignore[operator]
    assert not credentials.anonymous
    forever = verifier.verify(token("bob", ttl=None))
    assert forever.expires_at is None and forever.ttl() is None


def test_expired_wrong_signature_and_malformed() -> None:
    verifier = TokenVerifier(secret=SECRET)
    assert refused(verifier, token(ttl=-10)) == ErrorCode.TOKEN_EXPIRED
    assert refused(verifier, token(secret="another-secret-of-enough-length!!")) == 101
    assert refused(verifier, "not.a.token") == ErrorCode.UNAUTHORIZED
    no_sub = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert refused(verifier, no_sub) == ErrorCode.UNAUTHORIZED
    numeric_sub = jwt.encode({"sub": 5}, SECRET, algorithm="HS256")
    assert refused(verifier, numeric_sub) == ErrorCode.UNAUTHORIZED
    bad_channels = token(channels="chat:*")
    assert refused(verifier, bad_channels) == ErrorCode.UNAUTHORIZED


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode({"sub": "mallory"}, None, algorithm="none")  # type: ignore[arg-type]
    assert refused(TokenVerifier(secret=SECRET), unsigned) == ErrorCode.UNAUTHORIZED


def test_rs256_and_no_algorithm_confusion() -> None:
    private, public = rsa_pair()
    verifier = TokenVerifier(public_key=public)
    assert verifier.verify(token("carol", secret=private, algorithm="RS256")).user == "carol"
    # An HS256 token "signed" with the public key must not pass.
    assert refused(verifier, token("mallory")) == ErrorCode.UNAUTHORIZED
    other_private, _ = rsa_pair()
    assert refused(verifier, token(secret=other_private, algorithm="RS256")) == 101
    both = TokenVerifier(secret=SECRET, public_key=public)
    assert both.verify(token("a")).user == "a"
    assert both.verify(token("b", secret=private, algorithm="RS256")).user == "b"
    assert not TokenVerifier().enabled


def test_channel_patterns() -> None:
    credentials = Credentials("u", channels=("chat:*", "news"))
    assert credentials.allows("chat:lobby")
    assert credentials.allows("news")
    assert not credentials.allows("newsroom")
    assert not credentials.allows("admin:x")
    assert Credentials("u").allows("anything")


def test_token_from_subprotocol_then_cookie() -> None:
    headers = Headers(
        [
            ("Sec-WebSocket-Protocol", "tether.v1, tether.auth.abc.def.ghi"),
            ("Cookie", "a=1; tether_token=from-cookie"),
        ]
    )
    assert token_from_handshake(headers, "tether_token") == "abc.def.ghi"
    cookie_only = Headers([("Cookie", 'x=2; my_token="quoted"; tether_token=t')])
    assert token_from_handshake(cookie_only, "my_token") == "quoted"
    assert token_from_handshake(cookie_only, "tether_token") == "t"
    assert token_from_handshake(Headers(), "tether_token") is None


def test_api_key_comparison() -> None:
    assert api_key_matches("apikey s3cret", "s3cret")
    assert api_key_matches("ApiKey  s3cret ", "s3cret")
    assert not api_key_matches("apikey wrong", "s3cret")
    assert not api_key_matches("Bearer s3cret", "s3cret")
    assert not api_key_matches(None, "s3cret")
    assert not api_key_matches("apikey ", None)
