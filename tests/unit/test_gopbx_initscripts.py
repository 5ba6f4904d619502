"""The lab's service provider: Debian's init scripts, never "offline"."""

from unittest.mock import MagicMock, patch

import pytest

from tests.support import load_module

initscripts = load_module("lab/salt/_modules", "gopbx_initscripts", alias="lab_modules_gopbx_initscripts")


@pytest.fixture
def retcode():
    return MagicMock(return_value=0)


@pytest.fixture
def configure_loader_modules(retcode):
    return {initscripts: {"__opts__": {}, "__salt__": {"cmd.retcode": retcode}, "__context__": {}}}


def test_never_offline():
    assert initscripts.offline() is False


def test_every_state_used_function_goes_to_debian_service():
    debian = {f"debian_service.{name}": MagicMock(return_value=name) for name in initscripts.DELEGATED}
    with patch.object(initscripts.salt.loader, "raw_mod", return_value=debian) as raw_mod:
        for name in initscripts.DELEGATED:
            assert getattr(initscripts, name)("redis-server") == name
            debian[f"debian_service.{name}"].assert_called_once_with("redis-server")
    # Loaded once, then kept in the loader's context.
    raw_mod.assert_called_once()
    assert raw_mod.call_args.args[1] == "debian_service"


def test_enable_uses_update_rc_d_without_insserv(retcode):
    assert initscripts.enable("gopbx-media-standin") is True
    assert [call.args[0] for call in retcode.call_args_list] == [
        ["update-rc.d", "gopbx-media-standin", "defaults"], ["update-rc.d", "gopbx-media-standin", "enable"]]


def test_enable_reports_failure(retcode):
    retcode.return_value = 1
    assert initscripts.enable("missing-service") is False
