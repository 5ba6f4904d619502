"""
The tree served by a real salt-master to real minions: custom modules sync,
pillar is compiled by minion id, and a state using both applies idempotently.
"""


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
