"""SCRAM-SHA-256 verifiers: checked against RFC 7677's worked example."""

import base64
import hashlib
import hmac

from tests.support import load_module

scram = load_module("_utils", "gopbx_scram")

# RFC 7677, section 3: user "user", password "pencil".
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
AUTH_MESSAGE = (
    b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
)
CLIENT_PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def _keys(verifier):
    head, keys = verifier.split("$", 2)[1:]
    stored, server = keys.split(":")
    return head, base64.b64decode(stored), base64.b64decode(server)


def test_verifier_matches_rfc7677_example():
    head, stored_key, server_key = _keys(scram.verifier("pencil", "user", salt=SALT))
    assert head == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    # The server's signature in the RFC is HMAC(ServerKey, AuthMessage).
    assert hmac.new(server_key, AUTH_MESSAGE, hashlib.sha256).digest() == SERVER_SIGNATURE
    # The client's proof XOR its signature gives ClientKey, whose hash is StoredKey.
    signature = hmac.new(stored_key, AUTH_MESSAGE, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(CLIENT_PROOF, signature))
    assert hashlib.sha256(client_key).digest() == stored_key


def test_verifier_is_stable_per_role_and_password():
    assert scram.verifier("s3cret-password", "kamailio") == scram.verifier("s3cret-password", "kamailio")
    assert scram.verifier("s3cret-password", "kamailio") != scram.verifier("s3cret-password", "gopbx_api")
    assert scram.verifier("s3cret-password", "kamailio") != scram.verifier("other-password", "kamailio")


def test_matches_recognises_its_password_only():
    stored = scram.verifier("s3cret-password", "kamailio")
    assert scram.matches("s3cret-password", stored)
    assert not scram.matches("wrong-password", stored)
    assert not scram.matches("s3cret-password", "md5abcdef")
    assert not scram.matches("s3cret-password", "")
    assert not scram.matches("s3cret-password", "SCRAM-SHA-256$garbage")
