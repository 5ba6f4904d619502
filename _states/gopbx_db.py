"""
States for GoPBX's PostgreSQL: login roles with SCRAM verifiers, and schema migrations.

.. code-block:: yaml

    postgres-role-kamailio:
      gopbx_db.role_present:
        - name: kamailio
        - password: {{ secret }}

    postgres-schema-migrated:
      gopbx_db.migrated:
        - name: gopbx
        - directory: /usr/share/gopbx/migrations
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "gopbx_db"


def __virtual__():
    if "gopbx_db.psql" in __salt__:  # noqa: F821
        return __virtualname__
    return (False, "the gopbx_db execution module is not loaded")


def _result(name, result=True, comment="", changes=None):
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def role_present(name, password, replication=False):
    """
    The login role ``name`` exists with this password (stored only as a SCRAM
    verifier, which pgBouncer's auth file shares) and these attributes.
    The password never appears in the state's output.
    """
    try:
        current = __salt__["gopbx_db.role_state"](name)  # noqa: F821
    except CommandExecutionError as exc:
        if not __opts__["test"]:  # noqa: F821
            raise
        # A dry run on a fresh host: the server the role would live in is not up yet.
        return _result(name, None, f"Role {name} would be created ({exc})", {"role": name, "action": "created"})
    password_ok = current is not None and __utils__["gopbx_scram.matches"](  # noqa: F821
        password, current["verifier"]
    )
    wanted = {"login": True, "replication": replication}
    if current and password_ok and all(current[key] == value for key, value in wanted.items()):
        return _result(name, comment=f"Role {name} is as it should be")

    what = "created" if current is None else "updated"
    changes = {"role": name, "action": what}
    if current is not None and not password_ok:
        changes["password"] = "changed"
    if __opts__["test"]:  # noqa: F821
        return _result(name, None, f"Role {name} would be {what}", changes)
    verifier = __utils__["gopbx_scram.verifier"](password, name)  # noqa: F821
    __salt__["gopbx_db.set_role"](name, verifier, replication=replication)  # noqa: F821
    return _result(name, comment=f"Role {name} {what}", changes=changes)


def database_present(name):
    """
    The database ``name`` exists.
    """
    try:
        exists = __salt__["gopbx_db.database_exists"](name)  # noqa: F821
    except CommandExecutionError as exc:
        if not __opts__["test"]:  # noqa: F821
            raise
        return _result(name, None, f"Database {name} would be created ({exc})", {"database": name})
    if exists:
        return _result(name, comment=f"Database {name} exists")
    if __opts__["test"]:  # noqa: F821
        return _result(name, None, f"Database {name} would be created", {"database": name})
    __salt__["gopbx_db.create_database"](name)  # noqa: F821
    return _result(name, comment=f"Database {name} created", changes={"database": name})


def migrated(name, directory):
    """
    Every migration in ``directory`` is applied to database ``name``.
    """
    try:
        pending = __salt__["gopbx_db.pending_migrations"](name, directory)  # noqa: F821
    except (CommandExecutionError, OSError) as exc:
        if not __opts__["test"]:  # noqa: F821
            raise
        # A dry run on a fresh host: no server or migration files yet, so all would be applied.
        return _result(name, None, f"All migrations would be applied ({exc})", {"pending": "all"})
    if not pending:
        return _result(name, comment=f"Database {name} is at the latest migration")
    if __opts__["test"]:  # noqa: F821
        return _result(name, None, f"{len(pending)} migration(s) would be applied", {"pending": pending})
    applied = __salt__["gopbx_db.migrate"](name, directory)  # noqa: F821
    return _result(name, comment=f"Applied {len(applied)} migration(s)", changes={"applied": applied})


def dispatcher_set(name, description, region, destinations=None):
    """
    Dispatcher set ``name`` (its set id) exists with this description and region and,
    when ``destinations`` is given, holds exactly those SIP URIs; without it, the
    set's members are the media nodes that registered into it (the gopbx runner's).
    Kamailio must be told to reload its dispatcher when the destinations change.
    """
    wanted = {"description": description, "region": region}
    if destinations is not None:
        wanted["destinations"] = sorted(destinations)
    try:
        stored = __salt__["gopbx_db.dispatcher_set"](name)  # noqa: F821
    except CommandExecutionError as exc:
        if not __opts__["test"]:  # noqa: F821
            raise
        return _result(name, None, f"Dispatcher set {name} would be written ({exc})", {"new": wanted})
    current = {key: stored[key] for key in wanted} if stored else None
    if current == wanted:
        return _result(name, comment=f"Dispatcher set {name} is as it should be")
    changes = {"old": current, "new": wanted}
    if __opts__["test"]:  # noqa: F821
        return _result(name, None, f"Dispatcher set {name} would be written", changes)
    __salt__["gopbx_db.set_dispatcher_set"](name, wanted.get("destinations"), description, region)  # noqa: F821
    return _result(name, comment=f"Dispatcher set {name} written", changes=changes)
