"""
SCRAM-SHA-256 verifiers in PostgreSQL's stored form.

PostgreSQL and pgBouncer both get the same verifier: PostgreSQL as the role's
password, pgBouncer in its auth_file. pgBouncer can then pass a client's SCRAM
login through to the server, and no plaintext password is stored on the host.
The salt is derived from the role and password, not drawn at random, so the
verifier is the same on every run and a second state.apply changes nothing.

The password is SASLprep'd first, as PostgreSQL does (pg_saslprep, unassigned
code points allowed; a password SASLprep refuses is used as it is) and as libpq
does when it logs in: a non-ASCII secret still matches.
"""

import base64
import hashlib
import hmac

from salt.ext.saslprep import saslprep

ITERATIONS = 4096
PREFIX = "SCRAM-SHA-256$"


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def prepared(password):
    """The password as PostgreSQL hashes it: SASLprep'd, or unchanged where SASLprep refuses it."""
    try:
        return saslprep(password, prohibit_unassigned_code_points=False)
    except ValueError:
        return password


def verifier(password, role, iterations=ITERATIONS, salt=None):
    """The SCRAM-SHA-256 verifier of ``password`` for ``role``."""
    password = prepared(password)
    if salt is None:
        salt = hmac.new(password.encode(), b"gopbx-scram-salt:" + role.encode(), hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"{PREFIX}{iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def matches(password, stored):
    """True when ``stored`` (a PostgreSQL SCRAM verifier) was made from ``password``."""
    if not stored or not stored.startswith(PREFIX):
        return False
    try:
        head, keys = stored[len(PREFIX):].split("$", 1)
        iterations, salt = head.split(":", 1)
        expected = verifier(password, "", int(iterations), base64.b64decode(salt))
    except ValueError:
        return False
    return hmac.compare_digest(expected, stored)
