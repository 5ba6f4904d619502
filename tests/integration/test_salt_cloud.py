"""
salt-cloud end to end, the production way: this tree's driver, provider and
profiles, against the Vultr v2 DOUBLE (the real API can't be reached from tests),
on a real salt-master whose runner deregisters media nodes from the lab's real
Kamailio. The "VM" that boots is a salt-minion started with the identity cloud-init
would have given it (the user_data the driver sent).
"""

import base64
import os
import shutil
import time

import pytest
import requests
import yaml
from fastapi.testclient import TestClient

from tests.doubles.vultr import VultrDouble
from tests.integration.test_freeswitch_registration import (  # noqa: F401  (fixtures)
    HASH, dispatcher_uris, fire, lab, master, minion, node_rows, secrets)
from tests.system import sip
from tests.support import REPO, load_module, wait_for

KEY = "vultr-double-key"


@pytest.fixture
def vultr():
    double = VultrDouble(api_key=KEY, polls_until_active=2).start()
    yield double
    double.stop()


@pytest.fixture
def cloud(master, vultr):  # noqa: F811
    """salt-cloud on the master's configuration, with this tree's provider and profiles."""
    conf = os.path.dirname(master.config["conf_file"])
    provider = yaml.safe_load((REPO / "cloud.providers.d" / "vultr.conf").read_text())
    # The CLI gets the key from its environment; the master's runner (no such
    # environment) from the provider's api_key_file.
    key_file = f"{conf}/vultr-api-key"
    with open(key_file, "w") as handle:
        handle.write(KEY + "\n")
    provider["vultr"].update(api_url=vultr.url, wait_for_active_interval=0.2, minion={"master": "127.0.0.1"},
                             api_key_file=key_file)
    os.makedirs(f"{conf}/cloud.providers.d", exist_ok=True)
    with open(f"{conf}/cloud.providers.d/vultr.conf", "w") as handle:
        yaml.safe_dump(provider, handle)
    os.makedirs(f"{conf}/cloud.profiles.d", exist_ok=True)
    shutil.copy(REPO / "cloud.profiles.d" / "gopbx.conf", f"{conf}/cloud.profiles.d/gopbx.conf")

    def cli(api_key=KEY):
        return master.salt_cloud_cli(
            overrides={"cloud_dirs": [str(REPO / "_clouds")], "utils_dirs": [str(REPO / "_utils")]},
            environ={**os.environ, "VULTR_API_KEY": api_key}, timeout=300)

    return cli


def cloud_config(instance):
    text = base64.b64decode(instance["user_data"]).decode()
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    return {item["path"]: item["content"] for item in document["write_files"]}, document


def accepted_key(master, name):  # noqa: F811
    path = os.path.join(master.config["pki_dir"], "minions", name)
    return open(path).read() if os.path.exists(path) else None


def test_a_media_node_is_created_joins_and_is_destroyed(master, secrets, cloud, vultr):  # noqa: F811
    created = cloud().run("-p", "freeswitch", "fs-syd-7")
    assert created.returncode == 0, created.stderr
    assert created.data["fs-syd-7"]["status"] == "active" and created.data["fs-syd-7"]["region"] == "syd"
    (instance,) = vultr.instances.values()
    assert (instance["label"], instance["region"], instance["plan"], instance["os_id"]) == \
        ("fs-syd-7", "syd", "vc2-2c-4gb", 2136)
    assert instance["tags"] == ["gopbx", "freeswitch"]
    # cloud-init, not git: the minion's id, master and keys, Salt from its repository.
    files, document = cloud_config(instance)
    minion_conf = yaml.safe_load(files["/etc/salt/minion.d/gopbx.conf"])
    assert minion_conf == {"id": "fs-syd-7", "master": "127.0.0.1", "hash_type": "sha256",
                           "startup_states": "highstate"}
    assert "git" not in yaml.safe_dump(document["runcmd"])
    assert ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "salt-minion"] in document["runcmd"]
    # Salt's Python gets what the states import, at the versions the tree pins, before the minion starts.
    pinned = [line for line in (REPO / "requirements" / "salt.txt").read_text().splitlines()
              if line.startswith(("jsonschema==", "saltext-ufw=="))]
    install = document["runcmd"].index(["salt-pip", "install", *pinned])
    assert install < document["runcmd"].index(["systemctl", "enable", "--now", "salt-minion"])
    assert accepted_key(master, "fs-syd-7") == files["/etc/salt/pki/minion/minion.pub"]

    # The VM boots: a minion with exactly that identity joins, its key already accepted.
    node = minion(master, "fs-syd-7")
    pki = node.config["pki_dir"]
    os.makedirs(pki, exist_ok=True)
    for name in ("minion.pem", "minion.pub"):
        with open(os.path.join(pki, name), "w") as handle:
            handle.write(files[f"/etc/salt/pki/minion/{name}"])
    with node.started():
        assert master.salt_cli(timeout=60).run("test.ping", minion_tgt="fs-syd-7").data is True
        fire(node, {"address": "127.28.5.7", "capacity": 100, "xml_curl_password_hash": HASH})
        assert wait_for(lambda: "sip:127.28.5.7:5080" in dispatcher_uris())

    listed = cloud().run("-Q")
    assert "fs-syd-7" in str(listed.data)
    shown = cloud().run("-a", "show_instance", "fs-syd-7", "--assume-yes")
    assert instance["id"] in str(shown.data)

    # salt-cloud -d: out of Kamailio's dispatcher first, then the VM, then the key.
    in_dispatcher_at_delete = []
    vultr.on_request = lambda method, path: in_dispatcher_at_delete.append(
        "sip:127.28.5.7:5080" in dispatcher_uris()) if method == "DELETE" else None
    destroyed = cloud().run("-d", "fs-syd-7", "--assume-yes")
    assert destroyed.returncode == 0, destroyed.stderr
    assert "sip:127.28.5.7:5080" not in dispatcher_uris()
    assert ("fs-syd-7", "127.28.5.7", 401, "removed") in node_rows(secrets)
    assert vultr.instances == {}
    assert accepted_key(master, "fs-syd-7") is None
    # The node was out of the dispatcher before the VM's DELETE reached Vultr.
    assert in_dispatcher_at_delete == [False]


def test_the_other_profiles_make_their_roles(cloud, vultr):
    for profile, name, region, plan in (("kamailio-standby", "kam-mel-2", "mel", "vc2-2c-4gb"),
                                        ("pg-replica", "pgrep-syd-2", "syd", "vc2-4c-8gb")):
        result = cloud().run("-p", profile, name)
        assert result.returncode == 0, result.stderr
        instance = next(item for item in vultr.instances.values() if item["label"] == name)
        assert (instance["region"], instance["plan"]) == (region, plan)
        assert cloud().run("-d", name, "--assume-yes").returncode == 0
    assert vultr.instances == {}


def test_a_name_outside_the_profile_is_refused(master, cloud, vultr):  # noqa: F811
    result = cloud().run("-p", "freeswitch", "fs-mel-2")
    assert "'fs-mel-2' is not a name for this profile: use fs-syd-<n>" in result.stdout + result.stderr
    assert vultr.instances == {} and accepted_key(master, "fs-mel-2") is None


def test_vultr_failures_are_surfaced_and_leave_nothing_behind(master, cloud, vultr):  # noqa: F811
    # A wrong API key: Vultr's own message, no VM, no key left accepted.
    refused = cloud(api_key="wrong-key").run("-p", "freeswitch", "fs-syd-8")
    assert "Vultr API 401: Invalid API token." in refused.stdout + refused.stderr
    assert vultr.instances == {} and accepted_key(master, "fs-syd-8") is None
    # Rate limiting and a passing 503 are retried with backoff, and the VM is made.
    vultr.fail(429, times=2)
    vultr.fail(503)
    made = cloud().run("-p", "freeswitch", "fs-syd-8")
    assert made.returncode == 0, made.stderr
    assert [item["label"] for item in vultr.instances.values()] == ["fs-syd-8"]
    # A VM salt-cloud does not know of.
    missing = cloud().run("-d", "fs-syd-99", "--assume-yes")
    assert "No machines were found to be destroyed" in missing.stdout and len(vultr.instances) == 1
    assert cloud().run("-d", "fs-syd-8", "--assume-yes").returncode == 0
    assert vultr.instances == {} and accepted_key(master, "fs-syd-8") is None


# --- provisioning through the API: request -> webhook -> reactor -> runner -> salt-cloud ---


ADMIN_PASSWORD = "Provisioning-Admin-Pass-1"


def api(secrets, webhook):  # noqa: F811
    from gopbx_api.app import create_app
    from gopbx_api.settings import Settings

    passwords = load_module("api/gopbx_api", "passwords")
    settings = Settings(
        database_dsn=f"host=127.28.0.12 port=5432 dbname=gopbx user=gopbx_api password={secrets['postgres']['api']}",
        kamailio_rpc_url=sip.RPC_URL, 
        redis_url=f"redis://:{secrets['redis']['password']}@127.28.0.11:6379/0",
        jwt_keys=["k" * 40], platform_admins={"admin": passwords.hash_password(ADMIN_PASSWORD)},
        salt_webhook_url=webhook)
    client = TestClient(create_app(settings))
    token = client.post("/v1/token", json={"username": "admin", "password": ADMIN_PASSWORD}).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def request_count(secrets):  # noqa: F811
    with sip.db(secrets, "gopbx_salt") as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM gopbx.provisioning_requests")
        return cursor.fetchone()[0]


def test_the_api_asks_the_master_for_a_vm(master, secrets, cloud, vultr):  # noqa: F811
    cloud()  # writes salt-cloud's configuration beside the master's, which the runner reads
    webhook = f"http://127.0.0.1:{master.config['engines'][0]['webhook']['port']}/gopbx/provision"
    client = api(secrets, webhook)
    before = request_count(secrets)
    # Bad input and an unconfigured API write nothing.
    assert client.post("/v1/provisioning", json={"profile": "mainframe"}).status_code == 422
    unconfigured = api(secrets, "")
    reply = unconfigured.post("/v1/provisioning", json={"profile": "freeswitch"})
    assert reply.status_code == 503 and "salt_webhook_url" in reply.json()["detail"]
    assert request_count(secrets) == before

    reply = client.post("/v1/provisioning", json={"profile": "freeswitch"})
    assert reply.status_code == 202, reply.text
    request_id = reply.json()["id"]
    assert reply.json()["state"] == "pending" and reply.json()["requested_by"] == "admin"
    assert wait_for(lambda: client.get(f"/v1/provisioning/{request_id}").json()["state"] in ("created", "failed"),
                    timeout=120)
    done = client.get(f"/v1/provisioning/{request_id}").json()
    assert done["state"] == "created", done
    name = done["name"]
    (instance,) = vultr.instances.values()
    assert instance["label"] == name and name.startswith("fs-syd-") and done["detail"]["id"] == instance["id"]
    assert client.get("/v1/provisioning").json()["items"][0]["id"] == request_id

    # Forged or replayed pokes make nothing: the runner acts only on a pending request.
    requests.post(webhook, json={"request_id": request_id}, timeout=5)
    requests.post(webhook, data=b"not json", timeout=5)
    log_file = master.config["log_file"]
    assert wait_for(lambda: f"request {request_id} is not pending" in open(log_file, errors="replace").read())
    assert wait_for(lambda: "names no request id" in open(log_file, errors="replace").read())
    time.sleep(1)
    assert len(vultr.instances) == 1
    assert cloud().run("-d", name, "--assume-yes").returncode == 0
    assert vultr.instances == {}
