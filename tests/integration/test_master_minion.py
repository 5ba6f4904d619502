"""
The tree served by a real salt-master to real minions: custom modules sync,
pillar is compiled by minion id, and a state using both applies idempotently.
"""

import json
from pathlib import Path

import pytest


def test_sync_delivers_the_custom_modules(lab_minion):
    ret = lab_minion.salt_call_cli().run("saltutil.sync_all")
    assert ret.returncode == 0, ret
    synced = ret.data
    assert "modules.gopbx_pillar" in synced["modules"] and "modules.gopbx_db" in synced["modules"]
    assert "states.gopbx_db" in synced["states"]
    assert "utils.gopbx_scram" in synced["utils"]


def test_minion_gets_its_roles_and_plan_from_the_masters_pillar(lab_minion):
    lab_minion.salt_call_cli().run("saltutil.sync_all")
    cli = lab_minion.salt_call_cli()
    assert cli.run("gopbx_pillar.roles").data == ["coordinator", "media-standin"]
    # The lab's throwaway operator password stays in the lab's file: pillar has its hash only.
    assert "admin_password" not in cli.run("pillar.get", "secrets:api").data
    plan = cli.run("gopbx_pillar.network")
    assert plan.returncode == 0, plan
    assert plan.data["services"]["redis"] == "127.28.0.11"
    assert plan.data["internal"] == {"interface": "lo", "cidr": "127.28.0.0/24"}


def test_a_state_using_the_custom_modules_applies_idempotently(lab_minion, tmp_path):
    lab_minion.salt_call_cli().run("saltutil.sync_all")
    probe = tmp_path / "probe"
    cli = lab_minion.salt_call_cli()
    first = cli.run("state.apply", "gopbx_probe", pillar={"probe_path": str(probe)})
    assert first.returncode == 0, first
    assert [state["changes"] != {} for state in first.data.values()] == [True]
    lines = probe.read_text().splitlines()
    assert lines[:3] == ["roles coordinator,media-standin", "redis 127.28.0.11", "postgres 127.28.0.10"]
    assert lines[3].startswith("verifier SCRAM-SHA-256$4096:")
    second = cli.run("state.apply", "gopbx_probe", pillar={"probe_path": str(probe)})
    assert second.returncode == 0, second
    assert [state["changes"] for state in second.data.values()] == [{}]


def test_a_minion_with_an_unknown_id_gets_no_role_and_nothing_applies(stranger_minion, tmp_path):
    cli = stranger_minion.salt_call_cli()
    cli.run("saltutil.sync_all")
    ret = cli.run("state.apply", "gopbx_probe", pillar={"probe_path": str(tmp_path / "probe")})
    assert ret.returncode != 0
    assert "pillar key 'roles' must be a non-empty list" in str(ret.data)
    assert not (tmp_path / "probe").exists()


# What each role's formulas declare (required_secrets, optional_secrets): nothing more.
# The postgres formula's: its login roles', and Patroni's superuser and REST login.
DATABASE_SECRETS = {"postgres:kamailio", "postgres:api", "postgres:salt", "postgres:metrics", "postgres:replicator",
                    "postgres:superuser", "postgres:patroni_rest"}
COORDINATOR_SECRETS = DATABASE_SECRETS | {"redis:password", "api:jwt_key", "api:admin_password_hash",
                                          "freeswitch:esl_password", "vultr:api_key", "vultr:edge_api_key"}
SECRETS_BY_MINION = {
    "coord-syd-1": COORDINATOR_SECRETS,
    "lab-coord-7": COORDINATOR_SECRETS,
    "kam-mel-1": {"postgres:kamailio", "vultr:edge_api_key"},
    "fs-syd-1": {"freeswitch:esl_password", "freeswitch:signalwire_token"},
    "fs-mel-12": {"freeswitch:esl_password", "freeswitch:signalwire_token"},
    "pgrep-syd-1": DATABASE_SECRETS,
    "evil-1": set(),
    "fs-syd-1.evil": set(),
}


def secret_keys(pillar):
    return {f"{group}:{name}" for group, names in (pillar.get("secrets") or {}).items() for name in names}


@pytest.mark.parametrize("minion_id", SECRETS_BY_MINION)
def test_each_role_receives_only_the_secrets_its_formulas_declare(master, minion_id):
    ret = master.salt_run_cli().run("pillar.show_pillar", minion_id)
    assert ret.returncode == 0, ret
    assert secret_keys(ret.data) == SECRETS_BY_MINION[minion_id]


def test_a_media_node_gets_no_database_api_or_redis_secret(master):
    pillar = master.salt_run_cli().run("pillar.show_pillar", "fs-syd-1").data
    assert pillar["roles"] == ["freeswitch"]
    assert set(pillar["secrets"]) == {"freeswitch"}
    # Not even in another shape: no value of the secrets file but its own two appears anywhere.
    text = json.dumps(pillar)
    others = {key: value for key, value in master_secrets(master).items() if not key.startswith("freeswitch:")}
    assert not [key for key, value in others.items() if value in text]


def master_secrets(master):
    made = json.loads(Path(master.config["gopbx_site"], "secrets.sls").read_text())["secrets"]
    return {f"{group}:{name}": value for group, names in made.items() for name, value in names.items()}


def test_the_master_serves_the_states_and_modules_and_nothing_else_of_the_tree(lab_minion):
    served = lab_minion.salt_call_cli().run("cp.list_master").data
    assert "_modules/gopbx_db.py" in served and "_states/gopbx_db.py" in served and "_utils/gopbx_scram.py" in served
    assert "api/files/gopbx_api/main.py" in served and "salt_master/files/cloud-profiles.conf" in served
    tops = {path.split("/")[0] for path in served}
    # The formulas, the three module folders and (this master being a lab's) the labs' parts.
    assert not tops & {"tests", "scripts", "bench", "etc", "lab", "pillar", "reactor", "_runners", "_pillar",
                       "_clouds", ".git", ".venv", ".lab", "README.md", "Saltfile"}, tops
    assert not [path for path in served if "/tests/" in path or path.endswith(("pyproject.toml", "conftest.py"))]
    for path in ("tests/support.py", "api/tests/test_xmlcurl.py", "README.md", "../README.md", "scripts/lab.py",
                 "../pillar/top.sls", "salt/top.sls", ".lab/secrets.sls"):
        assert lab_minion.salt_call_cli().run("cp.get_file_str", f"salt://{path}").data is False, path
