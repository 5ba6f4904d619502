"""The remembered node-credential check: fast after a success, never for a wrong or changed password."""

from gopbx_api import passwords


def test_a_verified_password_is_remembered_only_for_its_own_hash(monkeypatch):
    stored = passwords.hash_password("node-secret-1234", iterations=1000)
    calls = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda *args: calls.append(args) or real(*args))
    assert passwords.verify_password_cached("node-secret-1234", stored)
    assert passwords.verify_password_cached("node-secret-1234", stored)
    assert len(calls) == 1  # the second answer came from memory
    for _ in range(2):
        assert not passwords.verify_password_cached("wrong-guess", stored)
    assert len(calls) == 3  # failures are checked in full every time
    rotated = passwords.hash_password("node-secret-5678", iterations=1000)
    assert not passwords.verify_password_cached("node-secret-1234", rotated)


def test_a_remembered_success_expires(monkeypatch):
    stored = passwords.hash_password("node-secret-1234", iterations=1000)
    assert passwords.verify_password_cached("node-secret-1234", stored)
    now = passwords.time.monotonic()
    monkeypatch.setattr(passwords.time, "monotonic", lambda: now + passwords.VERIFIED_TTL_SECONDS + 1)
    monkeypatch.setattr(passwords, "verify_password", lambda *args: False)
    assert not passwords.verify_password_cached("node-secret-1234", stored)
