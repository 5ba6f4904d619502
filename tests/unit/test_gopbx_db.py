"""gopbx_db execution and state modules, with psql mocked at cmd.run_all."""

import hashlib
from unittest.mock import MagicMock

import pytest
from salt.exceptions import CommandExecutionError

from tests.support import load_module

db_module = load_module("_modules", "gopbx_db")
db_state = load_module("_states", "gopbx_db")
scram = load_module("_utils", "gopbx_scram")


class FakePsql:
    """Answers psql by the SQL it is sent; records every statement."""

    def __init__(self, answers=None):
        self.answers = answers or {}
        self.sent = []

    def __call__(self, command, stdin, **kwargs):
        assert kwargs["runas"] == "postgres" and kwargs["python_shell"] is False
        self.sent.append(stdin)
        for needle, rows in self.answers.items():
            if needle in stdin:
                if isinstance(rows, Exception):
                    return {"retcode": 1, "stdout": "", "stderr": str(rows)}
                return {"retcode": 0, "stdout": "\n".join("\t".join(row) for row in rows), "stderr": ""}
        return {"retcode": 0, "stdout": "", "stderr": ""}


@pytest.fixture
def psql():
    return FakePsql()


@pytest.fixture
def state_salt():
    return {
        "gopbx_db.psql": MagicMock(),
        "gopbx_db.role_state": MagicMock(),
        "gopbx_db.set_role": MagicMock(),
        "gopbx_db.database_exists": MagicMock(return_value=True),
        "gopbx_db.create_database": MagicMock(),
        "gopbx_db.pending_migrations": MagicMock(return_value=[]),
        "gopbx_db.migrate": MagicMock(),
    }


@pytest.fixture
def configure_loader_modules(psql, state_salt):
    utils = {"gopbx_scram.verifier": scram.verifier, "gopbx_scram.matches": scram.matches}
    return {
        db_module: {"__salt__": {"cmd.run_all": psql}, "__utils__": utils},
        db_state: {"__salt__": state_salt, "__utils__": utils, "__opts__": {"test": False}},
    }


def test_role_state_reads_pg_authid(psql):
    psql.answers = {"FROM pg_authid": [["SCRAM-SHA-256$4096:x$y:z", "t", "f"]]}
    assert db_module.role_state("kamailio") == {"verifier": "SCRAM-SHA-256$4096:x$y:z", "login": True, "replication": False}


def test_role_state_of_missing_role_is_none(psql):
    assert db_module.role_state("nobody") is None


def test_set_role_creates_then_alters(psql):
    verifier = scram.verifier("a-long-password-123", "kamailio")
    db_module.set_role("kamailio", verifier)
    assert f"CREATE ROLE kamailio WITH LOGIN NOREPLICATION PASSWORD '{verifier}'" in psql.sent[-1]
    psql.answers = {"FROM pg_authid": [[verifier, "t", "f"]]}
    db_module.set_role("kamailio", verifier, replication=True)
    assert psql.sent[-1].startswith("ALTER ROLE kamailio WITH LOGIN REPLICATION")


@pytest.mark.parametrize("name", ["Kamailio", "kam; DROP TABLE x", "", "a-b"])
def test_identifiers_are_refused_before_any_sql(psql, name):
    with pytest.raises(CommandExecutionError, match="identifier"):
        db_module.role_state(name)
    assert psql.sent == []


def test_set_role_refuses_a_plain_password(psql):
    with pytest.raises(CommandExecutionError, match="SCRAM"):
        db_module.set_role("kamailio", "plaintext")
    assert psql.sent == []


def test_psql_failure_raises_with_its_message(psql):
    psql.answers = {"boom": RuntimeError('ERROR:  relation "boom" does not exist')}
    with pytest.raises(CommandExecutionError, match='relation "boom"'):
        db_module.psql("select * from boom")


def _migrations(tmp_path, *names):
    for name in names:
        (tmp_path / name).write_text(f"-- {name}\nSELECT 1;\n")
    (tmp_path / "README").write_text("not a migration")
    return tmp_path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_migration_files_in_version_order(tmp_path):
    directory = _migrations(tmp_path, "0002_b.sql", "0001_a.sql")
    assert [name for _, name, _ in db_module.migration_files(directory)] == ["0001_a.sql", "0002_b.sql"]


def test_duplicate_migration_versions_are_refused(tmp_path):
    directory = _migrations(tmp_path, "0001_a.sql", "0001_b.sql")
    with pytest.raises(CommandExecutionError, match="share a version"):
        db_module.migration_files(directory)


def test_pending_are_those_not_recorded(psql, tmp_path):
    directory = _migrations(tmp_path, "0001_a.sql", "0002_b.sql")
    psql.answers = {
        "FROM pg_database": [["1"]],
        "to_regclass": [["t"]],
        "SELECT version, sha256": [["1", _digest(directory / "0001_a.sql")]],
    }
    assert db_module.pending_migrations("gopbx", directory) == ["0002_b.sql"]


def test_all_are_pending_on_a_missing_database(psql, tmp_path):
    directory = _migrations(tmp_path, "0001_a.sql", "0002_b.sql")
    assert db_module.pending_migrations("gopbx", directory) == ["0001_a.sql", "0002_b.sql"]


def test_an_edited_applied_migration_is_an_error(psql, tmp_path):
    directory = _migrations(tmp_path, "0001_a.sql")
    psql.answers = {"FROM pg_database": [["1"]], "to_regclass": [["t"]], "SELECT version, sha256": [["1", "0" * 64]]}
    with pytest.raises(CommandExecutionError, match="changed after it was applied"):
        db_module.pending_migrations("gopbx", directory)


def test_migrate_applies_each_in_one_transaction_with_its_record(psql, tmp_path):
    directory = _migrations(tmp_path, "0001_a.sql", "0002_b.sql")
    psql.answers = {"FROM pg_database": [["1"]], "to_regclass": [["f"]]}
    assert db_module.migrate("gopbx", directory) == ["0001_a.sql", "0002_b.sql"]
    applied = [sql for sql in psql.sent if sql.startswith("BEGIN;")]
    assert len(applied) == 2
    assert "-- 0001_a.sql" in applied[0] and "VALUES (1, '0001_a.sql'" in applied[0]
    assert applied[0].rstrip().endswith("COMMIT;")


# --- the states ---


def _bind(state_salt, test=False):
    db_state.__opts__["test"] = test
    return state_salt


def test_role_present_with_right_password_changes_nothing(state_salt):
    salt = _bind(state_salt)
    salt["gopbx_db.role_state"].return_value = {
        "verifier": scram.verifier("a-long-password-123", "kamailio"), "login": True, "replication": False,
    }
    ret = db_state.role_present("kamailio", "a-long-password-123")
    assert ret["result"] is True and ret["changes"] == {}
    salt["gopbx_db.set_role"].assert_not_called()


def test_role_present_test_mode_reports_without_writing(state_salt):
    salt = _bind(state_salt, test=True)
    salt["gopbx_db.role_state"].return_value = {
        "verifier": scram.verifier("old-password-1234567", "kamailio"), "login": True, "replication": False,
    }
    ret = db_state.role_present("kamailio", "new-password-1234567")
    assert ret["result"] is None and ret["changes"]["password"] == "changed"
    assert "new-password" not in str(ret)
    salt["gopbx_db.set_role"].assert_not_called()


def test_role_present_sets_the_scram_verifier(state_salt):
    salt = _bind(state_salt)
    salt["gopbx_db.role_state"].return_value = None
    ret = db_state.role_present("replicator", "a-long-password-123", replication=True)
    assert ret["changes"]["action"] == "created"
    salt["gopbx_db.set_role"].assert_called_once_with(
        "replicator", scram.verifier("a-long-password-123", "replicator"), replication=True
    )
    assert "a-long-password-123" not in str(ret)


def test_role_present_dry_run_on_a_fresh_host(state_salt):
    salt = _bind(state_salt, test=True)
    salt["gopbx_db.role_state"].side_effect = CommandExecutionError("psql: not found")
    ret = db_state.role_present("kamailio", "a-long-password-123")
    assert ret["result"] is None and ret["changes"]["action"] == "created"


def test_migrated_test_mode_lists_pending_and_applies_nothing(state_salt):
    salt = _bind(state_salt, test=True)
    salt["gopbx_db.pending_migrations"].return_value = ["0003_x.sql"]
    ret = db_state.migrated("gopbx", "/usr/share/gopbx/migrations")
    assert ret["result"] is None and ret["changes"] == {"pending": ["0003_x.sql"]}
    salt["gopbx_db.migrate"].assert_not_called()


def test_migrated_applies_pending(state_salt):
    salt = _bind(state_salt)
    salt["gopbx_db.pending_migrations"].return_value = ["0003_x.sql"]
    salt["gopbx_db.migrate"].return_value = ["0003_x.sql"]
    ret = db_state.migrated("gopbx", "/usr/share/gopbx/migrations")
    assert ret["result"] is True and ret["changes"] == {"applied": ["0003_x.sql"]}


def test_database_present_creates_once(state_salt):
    salt = _bind(state_salt)
    salt["gopbx_db.database_exists"].return_value = False
    assert db_state.database_present("gopbx")["changes"] == {"database": "gopbx"}
    salt["gopbx_db.database_exists"].return_value = True
    assert db_state.database_present("gopbx")["changes"] == {}
    salt["gopbx_db.create_database"].assert_called_once_with("gopbx")
