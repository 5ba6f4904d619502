"""A real salt-master and salt-minions (pytest-salt-factories) serving this tree."""

import pytest

from tests.support import REPO, fake_secrets, master_config


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    # Keep every factory file under this run's temporary directory.
    return {"root_dir": str(tmp_path_factory.mktemp("salt-factories"))}


@pytest.fixture(scope="package")
def master(salt_factories, tmp_path_factory):
    made = fake_secrets()
    made["freeswitch"]["signalwire_token"] = "pat_fake_signalwire_token_for_tests"
    site = tmp_path_factory.mktemp("site")
    # gopbx_site: not a Salt option; the tests read the secrets file back through it.
    config = master_config(site, made, lab=True, engines=[], gopbx_site=str(site))
    config["file_roots"]["base"].append(str(REPO / "tests" / "integration" / "states"))
    factory = salt_factories.salt_master_daemon("gopbx-master", overrides=config)
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def lab_minion(master):
    factory = master.salt_minion_daemon("lab-factory-1", overrides={"master": "127.0.0.1"})
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def stranger_minion(master):
    # An id that no pillar or role pattern matches.
    factory = master.salt_minion_daemon("evil-1", overrides={"master": "127.0.0.1"})
    with factory.started():
        yield factory
