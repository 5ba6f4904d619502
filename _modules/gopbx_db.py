"""
GoPBX's PostgreSQL administration: login roles and versioned schema migrations.

Runs ``psql`` as the ``postgres`` OS user over the local socket (peer auth), so it
needs no password and works before pgBouncer or any network listener is up.

Migrations are files named ``NNNN_what.sql`` in one directory. Each pending file
is applied in its own transaction together with the row that records it in
``public.gopbx_schema_migrations``, so a failed migration leaves nothing behind.
An applied file whose content has since changed is an error, never re-run.
"""

import hashlib
import os
import re

from salt.exceptions import CommandExecutionError

__virtualname__ = "gopbx_db"

MIGRATIONS_TABLE = "public.gopbx_schema_migrations"
MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def __virtual__():
    return __virtualname__


def _identifier(name):
    if not IDENTIFIER.fullmatch(name or ""):
        raise CommandExecutionError(f"not a plain PostgreSQL identifier: {name!r}")
    return name


def _literal(value):
    return "'" + str(value).replace("'", "''") + "'"


def psql(sql, dbname="postgres"):
    """
    Run SQL as the postgres superuser and return the rows (lists of strings).

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.psql 'select 1'
    """
    result = __salt__["cmd.run_all"](  # noqa: F821
        # The socket of the server on 5432, named: under Patroni, Debian's own
        # (stopped) cluster is still psql's default.
        ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", "/var/run/postgresql", "-p", "5432",
         "-d", dbname],
        stdin=sql,
        runas="postgres",
        cwd="/",
        python_shell=False,
        output_loglevel="quiet",
    )
    if result["retcode"] != 0:
        raise CommandExecutionError(f"psql on {dbname} failed: {result['stderr'].strip()}")
    return [line.split("\t") for line in result["stdout"].splitlines() if line]


def role_state(name):
    """
    The role's stored password verifier and attributes, or None if it does not exist.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.role_state kamailio
    """
    rows = psql(
        "SELECT coalesce(rolpassword, ''), rolcanlogin, rolreplication FROM pg_authid "
        f"WHERE rolname = {_literal(_identifier(name))}"
    )
    if not rows:
        return None
    verifier, login, replication = rows[0]
    return {"verifier": verifier, "login": login == "t", "replication": replication == "t"}


def set_role(name, verifier, replication=False):
    """
    Create or alter a login role so it has exactly this SCRAM verifier and attributes.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.set_role kamailio 'SCRAM-SHA-256$4096:...'
    """
    name = _identifier(name)
    if not verifier.startswith("SCRAM-SHA-256$"):
        raise CommandExecutionError("a role's password must be given as a SCRAM-SHA-256 verifier")
    attributes = "LOGIN " + ("REPLICATION" if replication else "NOREPLICATION")
    verb = "ALTER" if role_state(name) else "CREATE"
    psql(f"{verb} ROLE {name} WITH {attributes} PASSWORD {_literal(verifier)}")
    return True


def database_exists(dbname):
    """
    True when the database exists.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.database_exists gopbx
    """
    return psql(f"SELECT 1 FROM pg_database WHERE datname = {_literal(_identifier(dbname))}") == [["1"]]


def create_database(dbname):
    """
    Create the database (owned by postgres; roles get grants from the migrations).

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.create_database gopbx
    """
    psql(f"CREATE DATABASE {_identifier(dbname)} ENCODING 'UTF8' TEMPLATE template0")
    return True


def scram_verifier(password, role):
    """
    The SCRAM-SHA-256 verifier that PostgreSQL and pgBouncer both store for a role.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.scram_verifier secret kamailio
    """
    return __utils__["gopbx_scram.verifier"](password, role)  # noqa: F821


def migration_files(directory):
    """
    The migrations in ``directory`` as a list of (version, file name, sha256), in order.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.migration_files /usr/share/gopbx/migrations
    """
    found = []
    for file_name in sorted(os.listdir(directory)):
        match = MIGRATION_FILE.fullmatch(file_name)
        if not match:
            continue
        with open(os.path.join(directory, file_name), "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        found.append((int(match.group(1)), file_name, digest))
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise CommandExecutionError(f"two migrations in {directory} share a version number")
    return found


def applied_migrations(dbname):
    """
    The migrations recorded in the database: {version: sha256}.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.applied_migrations gopbx
    """
    exists = psql(f"SELECT to_regclass({_literal(MIGRATIONS_TABLE)}) IS NOT NULL", dbname)
    if exists != [["t"]]:
        return {}
    rows = psql(f"SELECT version, sha256 FROM {MIGRATIONS_TABLE} ORDER BY version", dbname)
    return {int(version): digest for version, digest in rows}


def pending_migrations(dbname, directory):
    """
    The migration files not yet applied. Raises if an applied one was edited.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.pending_migrations gopbx /usr/share/gopbx/migrations
    """
    if not database_exists(dbname):
        return [name for _, name, _ in migration_files(directory)]
    applied = applied_migrations(dbname)
    pending = []
    for version, file_name, digest in migration_files(directory):
        if version not in applied:
            pending.append(file_name)
        elif applied[version] != digest:
            raise CommandExecutionError(
                f"migration {file_name} was changed after it was applied; add a new migration instead"
            )
    return pending


def migrate(dbname, directory):
    """
    Apply every pending migration, each in its own transaction. Returns the files applied.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.migrate gopbx /usr/share/gopbx/migrations
    """
    psql(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        "version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now())",
        dbname,
    )
    pending = pending_migrations(dbname, directory)
    digests = {name: digest for _, name, digest in migration_files(directory)}
    for file_name in pending:
        with open(os.path.join(directory, file_name), encoding="utf-8") as handle:
            body = handle.read()
        version = int(MIGRATION_FILE.fullmatch(file_name).group(1))
        psql(
            "BEGIN;\n"
            f"{body}\n;\n"
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, sha256) VALUES "
            f"({version}, {_literal(file_name)}, {_literal(digests[file_name])});\n"
            "COMMIT;\n",
            dbname,
        )
    return pending


def dispatcher_set(setid):
    """
    A dispatcher set as stored: {'description': ..., 'region': ..., 'destinations': [...]} or None.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.dispatcher_set 1
    """
    setid = int(setid)
    found = psql(f"SELECT description, region FROM gopbx.dispatcher_sets WHERE setid = {setid}", "gopbx")
    if not found:
        return None
    rows = psql(f"SELECT destination FROM dispatcher WHERE setid = {setid} ORDER BY destination", "gopbx")
    return {"description": found[0][0], "region": found[0][1], "destinations": [row[0] for row in rows]}


def set_dispatcher_set(setid, destinations, description, region):
    """
    Make dispatcher set ``setid`` hold exactly ``destinations`` (SIP URIs), in one
    transaction; with ``destinations`` None, only the set itself (media nodes join it
    by registering, through the gopbx runner).

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_db.set_dispatcher_set 1 '["sip:127.28.1.1:5080"]' 'lab stand-ins' lab
    """
    setid = int(setid)
    values = ", ".join(f"({setid}, {_literal(uri)}, 0, 0, {_literal(description)})" for uri in destinations or [])
    psql(
        "BEGIN;\n"
        f"INSERT INTO gopbx.dispatcher_sets (setid, region, description) VALUES "
        f"({setid}, {_literal(region)}, {_literal(description)}) "
        "ON CONFLICT (setid) DO UPDATE SET region = EXCLUDED.region, description = EXCLUDED.description;\n"
        + (f"DELETE FROM dispatcher WHERE setid = {setid};\n" if destinations is not None else "")
        + (f"INSERT INTO dispatcher (setid, destination, flags, priority, description) VALUES {values};\n"
           if destinations else "")
        + "COMMIT;\n",
        "gopbx",
    )
    return True
