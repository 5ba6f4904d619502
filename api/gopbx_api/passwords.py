"""Password hashes for API logins (PBKDF2-SHA256) and SIP digest hashes for Kamailio."""

import base64
import hashlib
import hmac
import os
import time

ITERATIONS = 200_000
# Successful checks remembered this long (see verify_password_cached).
VERIFIED_TTL_SECONDS = 300
_verified = {}
# Checked when there is no real hash to check (an unknown user or node), so the
# answer takes as long as for a known one and timing does not tell which exist.
DUMMY_HASH = f"pbkdf2_sha256${ITERATIONS}$" + "A" * 22 + "==$" + "A" * 43 + "="


def hash_password(password, salt=None, iterations=ITERATIONS):
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password, stored):
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except (AttributeError, ValueError):
        return False
    if scheme != "pbkdf2_sha256":
        return False
    expected = hash_password(password, base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(expected.split("$")[3], digest)


def verify_password_cached(password, stored):
    """
    verify_password, remembering a success for a while: a FreeSWITCH node sends its
    credentials with every xml_curl request, and PBKDF2 costs ~100 ms by design.
    Keyed by the stored hash too, so a changed password is checked afresh; failures
    are never remembered, so guessing stays as slow as ever.
    """
    key = hashlib.sha256(stored.encode() + b"\0" + password.encode()).digest()
    now = time.monotonic()
    if _verified.get(key, 0) > now:
        return True
    if not verify_password(password, stored):
        return False
    if len(_verified) > 4096:
        _verified.clear()
    _verified[key] = now + VERIFIED_TTL_SECONDS
    return True


def sip_ha1(user, realm, password):
    """Kamailio's ha1 (user:realm:password) and ha1b (user@realm:realm:password)."""
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha1b = hashlib.md5(f"{user}@{realm}:{realm}:{password}".encode()).hexdigest()
    return ha1, ha1b
