"""A real salt-master and salt-minions (pytest-salt-factories) serving this tree."""

import json

import pytest

from tests.support import REPO, fake_secrets


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    # Keep every factory file under this run's temporary directory.
    return {"root_dir": str(tmp_path_factory.mktemp("salt-factories"))}


@pytest.fixture(scope="package")
def master(salt_factories, tmp_path_factory):
    site = tmp_path_factory.mktemp("site-pillar")
    (site / "site").mkdir()
    (site / "site" / "lab.sls").write_text(json.dumps({"secrets": fake_secrets()}))
    config = {
        "file_roots": {"base": [str(REPO / "salt"), str(REPO), str(REPO / "tests" / "integration" / "states")]},
        "file_ignore_regex": [r"/\.git($|/)", r"/\.venv($|/)", r"/\.lab($|/)"],
        "pillar_roots": {"base": [str(REPO / "pillar"), str(site)]},
        "pillar_safe_render_error": True,
        "interface": "127.0.0.1",
    }
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
