"""Password hashes for API logins (PBKDF2-SHA256) and SIP digest hashes for Kamailio."""

import base64
import hashlib
import hmac
import os

ITERATIONS = 200_000


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


def sip_ha1(user, realm, password):
    """Kamailio's ha1 (user:realm:password) and ha1b (user@realm:realm:password)."""
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha1b = hashlib.md5(f"{user}@{realm}:{realm}:{password}".encode()).hexdigest()
    return ha1, ha1b
