"""The single-host lab: applied for real, idempotent, and its data tier works as specified."""

import grp
import json
import os
import pwd
import secrets as token
import socket
import subprocess

import psycopg2
import pytest
import yaml

from tests.render import checkers
from tests.support import REPO, load_module, salt_call
from tests.system import sip
from tests.system.conftest import LAB_CONFIG, PLAN

pytestmark = pytest.mark.system
scram = load_module("_utils", "gopbx_scram")


def connect(lab, user, password=None, host=PLAN["pgbouncer"]):
    secret_key = {"kamailio": "kamailio", "gopbx_api": "api", "gopbx_salt": "salt", "gopbx_metrics": "metrics"}[user]
    password = password if password is not None else lab["secrets"]["postgres"][secret_key]
    return psycopg2.connect(host=host, port=5432, dbname="gopbx", user=user, password=password, connect_timeout=5)


def redis_cli(*args, password=None):
    command = ["redis-cli", "-h", PLAN["redis"], "-p", "6379", "--no-auth-warning"]
    if password:
        command += ["-a", password]
    return subprocess.run(command + list(args), capture_output=True, text=True, check=False, timeout=30).stdout.strip()


def test_lab_up_reports_every_service_listening(lab):
    assert "0 failed" in lab["output"]
    rows = {tuple(line.split()[:3]): line.split()[3] for line in lab["output"].splitlines()
            if len(line.split()) == 4 and line.split()[2] in ("tcp", "tls", "rpc", "ng", "http")}
    assert rows == {
        ("PostgreSQL", "127.28.0.10:5432", "tcp"): "listening",
        ("pgBouncer", "127.28.0.12:5432", "tcp"): "listening",
        ("Redis", "127.28.0.11:6379", "tcp"): "listening",
        ("Kamailio", "127.0.0.1:5060", "tcp"): "listening",
        ("Kamailio", "127.0.0.1:5061", "tls"): "listening",
        ("Kamailio", "127.28.0.15:8080", "rpc"): "listening",
        ("RTPEngine", "127.28.0.1:2223", "ng"): "answering",
        ("API", "127.28.0.30:8080", "http"): "listening",
        ("Knot", "127.28.0.53:53", "tcp"): "listening",
    }


def test_second_apply_reports_zero_changes(lab):
    _, result = salt_call(LAB_CONFIG, "state.apply")
    changed = {key: value["changes"] for key, value in result.items() if value["changes"]}
    assert changed == {}
    assert all(value["result"] is True for value in result.values())


def test_dry_run_tells_the_truth_nothing_to_change(lab):
    _, result = salt_call(LAB_CONFIG, "state.apply", "test=True")
    pending = {key: value["comment"] for key, value in result.items() if value["result"] is not True or value["changes"]}
    assert pending == {}


def test_dry_run_reports_a_drifted_config_and_leaves_it(lab):
    path = "/etc/redis/redis.conf"
    with open(path) as handle:
        original = handle.read()
    stat = os.stat(path)
    try:
        with open(path, "a") as handle:
            handle.write("# drift\n")
        _, result = salt_call(LAB_CONFIG, "state.apply", "test=True")
        drifted = [value for value in result.values() if value["__id__"] == "redis-config-managed"]
        assert drifted[0]["result"] is None
        with open(path) as handle:
            assert handle.read().endswith("# drift\n")
    finally:
        with open(path, "w") as handle:
            handle.write(original)
        os.chown(path, stat.st_uid, stat.st_gid)
        os.chmod(path, stat.st_mode)


@pytest.mark.parametrize("user,sql", [
    ("kamailio", "SELECT count(*) FROM subscriber"),
    ("gopbx_api", "SELECT count(*) FROM gopbx.tenants"),
    ("gopbx_salt", "SELECT count(*) FROM gopbx.nodes"),
])
def test_roles_work_through_pgbouncer(lab, user, sql):
    conn = connect(lab, user)
    with conn.cursor() as cursor:
        cursor.execute(sql)
        # A count came back (a role without the grant gets an error here, not a number).
        assert isinstance(cursor.fetchone()[0], int)
        cursor.execute("SELECT current_user, host(inet_server_addr())")
        assert cursor.fetchone() == (user, PLAN["postgres"])  # through pgBouncer, to PostgreSQL
    conn.close()


def test_api_role_writes_tenants_in_a_transaction(lab):
    conn = connect(lab, "gopbx_api")
    try:
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO gopbx.tenants (domain, name, max_calls, calls_per_second) "
                           "VALUES ('system-test.example', 'System test', 5, 2) RETURNING id")
            assert cursor.fetchone()[0] > 0
            cursor.execute("INSERT INTO gopbx.audit (actor, action, object_type, object_id) "
                           "VALUES ('system-test', 'create', 'tenant', 'system-test.example')")
        conn.rollback()
    finally:
        conn.close()


def test_wrong_password_is_refused(lab):
    with pytest.raises(psycopg2.OperationalError, match="authentication failed"):
        connect(lab, "kamailio", password="not-the-password")


@pytest.mark.parametrize("user,sql", [
    ("kamailio", "INSERT INTO gopbx.tenants (domain, name, max_calls, calls_per_second) VALUES ('x.y', 'x', 1, 1)"),
    ("kamailio", "UPDATE subscriber SET ha1 = 'x'"),
    ("gopbx_api", "UPDATE gopbx.audit SET actor = 'forged'"),
    ("gopbx_api", "DELETE FROM gopbx.nodes"),
    ("gopbx_salt", "DELETE FROM subscriber"),
    ("gopbx_metrics", "SELECT * FROM subscriber"),
])
def test_least_privilege(lab, user, sql):
    conn = connect(lab, user)
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


def test_pgbouncer_pools_in_transaction_mode(lab):
    stats = psycopg2.connect(host=PLAN["pgbouncer"], port=5432, dbname="pgbouncer", user="gopbx_metrics",
                             password=lab["secrets"]["postgres"]["metrics"])
    stats.set_session(autocommit=True)
    with stats.cursor() as cursor:
        cursor.execute("SHOW CONFIG")
        config = {row[0]: row[1] for row in cursor.fetchall()}
    stats.close()
    assert (config["pool_mode"], config["default_pool_size"], config["max_client_conn"]) == ("transaction", "40", "500")


def test_migrations_are_recorded(lab):
    _, applied = salt_call(LAB_CONFIG, "gopbx_db.applied_migrations", "gopbx")
    in_tree = sorted(int(path.name.split("_")[0]) for path in (REPO / "salt/postgres/files/migrations").glob("*.sql"))
    assert sorted(map(int, applied)) == in_tree and in_tree[:6] == [1, 2, 3, 4, 5, 6]
    _, pending = salt_call(LAB_CONFIG, "gopbx_db.pending_migrations", "gopbx", "/usr/share/gopbx/migrations")
    assert pending == []


def test_postgres_settings_from_pillar(lab):
    conn = connect(lab, "gopbx_metrics", host=PLAN["postgres"])
    with conn.cursor() as cursor:
        cursor.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                       "('wal_level', 'max_wal_senders', 'wal_keep_size', 'max_connections', 'password_encryption')")
        settings = dict(cursor.fetchall())
    conn.close()
    assert settings == {"wal_level": "replica", "max_wal_senders": "3", "wal_keep_size": "256MB",
                        "max_connections": "100", "password_encryption": "scram-sha-256"}


def test_redis_requires_its_password(lab):
    password = lab["secrets"]["redis"]["password"]
    assert redis_cli("GET", "anything").startswith("NOAUTH")
    assert redis_cli("PING", password=password) == "PONG"
    assert redis_cli("CONFIG", "GET", "maxmemory", password=password).split() == ["maxmemory", str(512 * 2**20)]
    assert redis_cli("CONFIG", "GET", "maxmemory-policy", password=password).split()[1] == "allkeys-lru"


@pytest.mark.parametrize("port", [5432, 6379])
def test_services_listen_only_on_their_plan_addresses(lab, port):
    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("override,key", [
    ({"redis": {"maxmemory_mb": -5}}, "redis:maxmemory_mb"),
    ({"secrets": {"postgres": {"api": None}}}, "secrets:postgres:api"),
    ({"roles": ["coordinator", "voicemail"]}, "roles"),
    ({"network": {"services": {"pgbouncer": "10.1.2.3"}}}, "network:services:pgbouncer"),
])
def test_bad_pillar_applies_nothing_and_names_the_key(lab, override, key):
    watched = ["/etc/redis/redis.conf", "/etc/gopbx/roles", "/etc/pgbouncer/pgbouncer.ini"]
    before = {path: os.stat(path).st_mtime_ns for path in watched}
    code, result = salt_call(LAB_CONFIG, "state.apply", f"pillar={json.dumps(override)}", check=False)
    assert code != 0
    assert isinstance(result, list), "no state may run when the pillar is bad"
    assert f"pillar key '{key}'" in json.dumps(result)
    assert {path: os.stat(path).st_mtime_ns for path in watched} == before


def test_a_rotated_secret_is_applied_and_logins_follow_it(lab):
    """Rotate the kamailio role's secret in the lab's secrets: PostgreSQL and pgBouncer both take it."""
    path = REPO / ".lab" / "secrets.sls"
    original = path.read_text()
    site = yaml.safe_load(original)
    old = site["secrets"]["postgres"]["kamailio"]
    site["secrets"]["postgres"]["kamailio"] = token.token_urlsafe(24)
    try:
        path.write_text("# Throwaway lab secrets, made by scripts/lab.\n" + json.dumps(site, ensure_ascii=False))
        _, result = salt_call(LAB_CONFIG, "state.apply")
        assert all(value["result"] is True for value in result.values())
        connect(lab, "kamailio", password=site["secrets"]["postgres"]["kamailio"]).close()
        with pytest.raises(psycopg2.OperationalError, match="authentication failed"):
            connect(lab, "kamailio", password=old)
        # Kamailio restarted with it and reads its tables through pgBouncer with it.
        sip.rpc("dispatcher.reload")
    finally:
        path.write_text(original)
        salt_call(LAB_CONFIG, "state.apply")


@pytest.mark.parametrize("password", ["Ｐａｓｓ\u00adwo\u0308rd\u00a0kept-secret", "пароль-密码-kept-secret",
                                      "plain-ascii-secret-1234", "bad\u200f\u05d0bidi-secret"])
def test_scram_verifiers_match_postgresqls_own_for_any_password(lab, password):
    """PostgreSQL hashes the password itself (pg_saslprep, random salt): our verifier agrees with it."""
    sql = ("SET password_encryption = 'scram-sha-256'; CREATE ROLE gopbx_scram_probe PASSWORD "
           f"'{password}'; SELECT rolpassword FROM pg_authid WHERE rolname = 'gopbx_scram_probe'; "
           "DROP ROLE gopbx_scram_probe;")
    reply = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, check=True, timeout=60)
    stored = reply.stdout.strip()
    assert stored.startswith("SCRAM-SHA-256$4096:")
    assert scram.matches(password, stored)
    assert not scram.matches(password + "x", stored)


def test_a_stopped_service_is_started_by_the_next_apply(lab):
    subprocess.run(["service", "redis-server", "stop"], capture_output=True, check=True)
    assert redis_cli("PING", password=lab["secrets"]["redis"]["password"]) != "PONG"
    _, result = salt_call(LAB_CONFIG, "state.apply")
    started = [value for value in result.values() if value["__id__"] == "redis-server-service-running"][0]
    assert started["result"] is True and started["changes"] == {"redis-server": True}
    assert redis_cli("PING", password=lab["secrets"]["redis"]["password"]) == "PONG"


def certificate_names(path):
    return subprocess.run(["openssl", "x509", "-in", path, "-noout", "-subject", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout


def test_a_changed_tls_common_name_reissues_the_self_signed_certificate(lab):
    """x509_v2 compares the certificate with what pillar asks (the old 'creates:' never looked again)."""
    state = ["state.sls_id", "kamailio-tls-self-signed-created", "kamailio"]
    key_before = open("/etc/kamailio/tls/key.pem").read()
    try:
        _, result = salt_call(LAB_CONFIG, *state, 'pillar={"kamailio": {"tls_common_name": "sip2.lab.gopbx.invalid"}}')
        assert all(value["result"] is True for value in result.values())
        assert "sip2.lab.gopbx.invalid" in certificate_names("/etc/kamailio/tls/cert.pem")
        assert open("/etc/kamailio/tls/key.pem").read() == key_before  # the key stays
    finally:
        salt_call(LAB_CONFIG, *state)
    names = certificate_names("/etc/kamailio/tls/cert.pem")
    assert "CN = sip.lab.gopbx.invalid" in names and "DNS:sip.lab.gopbx.invalid" in names


# Files that hold a password or key, and the one account (besides root) that may read each.
SECRET_FILES = {
    "/etc/kamailio/kamailio.cfg": "kamailio", "/etc/kamailio/tls/key.pem": "kamailio",
    "/etc/gopbx/api.json": "gopbx-api", "/etc/pgbouncer/userlist.txt": "postgres",
    "/etc/redis/redis.conf": "redis", "/etc/salt/master.d/gopbx-runner.conf": "root",
}


@pytest.mark.parametrize("path,reader", SECRET_FILES.items(), ids=list(SECRET_FILES))
def test_files_with_secrets_are_readable_by_their_service_alone(lab, path, reader):
    info = os.stat(path)
    assert info.st_mode & 0o007 == 0, f"{path} is readable by others: {oct(info.st_mode)}"
    owner, group = pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid)
    assert owner in ("root", reader)
    if info.st_mode & 0o040:  # the group may read: it must be the service's own, with nobody else in it
        members = set(group.gr_mem) | {user.pw_name for user in pwd.getpwall() if user.pw_gid == info.st_gid}
        assert members <= {reader}, f"{path}: group {group.gr_name} also holds {members - {reader}}"


def served_certificate(address, name):
    """The certificate Nginx presents for NAME (what openssl s_client prints holds it)."""
    return subprocess.run(["openssl", "s_client", "-connect", f"{address}:443", "-servername", name], input="",
                          capture_output=True, text=True, timeout=30).stdout


def test_nginx_serves_a_reissued_certificate_at_once(lab):
    """A changed server_name reissues the self-signed certificate, and Nginx reloads to serve it."""
    nginx = "127.28.0.13"
    try:
        _, result = salt_call(LAB_CONFIG, "state.sls", "nginx", 'pillar={"nginx": {"server_name": "api2.gopbx.invalid"}}')
        assert all(value["result"] is True for value in result.values())
        assert "CN = api2.gopbx.invalid" in subprocess.run(
            ["openssl", "x509", "-noout", "-subject"], input=served_certificate(nginx, "api2.gopbx.invalid"),
            capture_output=True, text=True, check=True).stdout
    finally:
        salt_call(LAB_CONFIG, "state.sls", "nginx")
    assert "CN = api.gopbx.au" in subprocess.run(["openssl", "x509", "-noout", "-subject"],
                                                 input=served_certificate(nginx, "api.gopbx.au"),
                                                 capture_output=True, text=True, check=True).stdout


def kdig(name, record_type):
    return checkers.kdig(53, name, record_type, server=PLAN["dns"])


def test_knot_serves_the_labs_zone_from_pillar(lab):
    assert kdig("api.gopbx.lab.invalid", "A") == [("api.gopbx.lab.invalid.", "300", "A", "127.28.0.13")]
    assert kdig("sip.gopbx.lab.invalid", "A") == [("sip.gopbx.lab.invalid.", "30", "A", "127.0.0.1")]
    for service, port in (("_sip._udp", 5060), ("_sip._tcp", 5060), ("_sips._tcp", 5061)):
        assert kdig(f"{service}.gopbx.lab.invalid", "SRV") == [
            (f"{service}.gopbx.lab.invalid.", "30", "SRV", f"10 0 {port} sip.gopbx.lab.invalid.")]
    # Authoritative for its own zone only, and no recursion for anyone.
    assert kdig("example.com", "A") == []
    soa = kdig("gopbx.lab.invalid", "SOA")
    assert soa[0][3].startswith("ns1.gopbx.lab.invalid. hostmaster.gopbx.lab.invalid. ")


def test_an_unchanged_zone_keeps_its_serial_and_a_changed_one_raises_it(lab):
    def serial():
        return int(kdig("gopbx.lab.invalid", "SOA")[0][3].split()[2])

    before = serial()
    salt_call(LAB_CONFIG, "state.apply", "dns")
    assert serial() == before
    pillar = json.dumps({"dns": {"addresses": {"api": "127.28.0.13", "sip": "127.0.0.1", "sip-b": "127.0.0.1"}}})
    try:
        salt_call(LAB_CONFIG, "state.apply", "dns", f"pillar={pillar}")
        assert kdig("sip-b.gopbx.lab.invalid", "A")[0][3] == "127.0.0.1"
        assert serial() > before
    finally:
        salt_call(LAB_CONFIG, "state.apply", "dns")
    assert kdig("sip-b.gopbx.lab.invalid", "A") == []
