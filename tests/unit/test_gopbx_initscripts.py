"""The lab's service provider: Debian's init scripts, never "offline"."""

from unittest.mock import MagicMock, patch

import pytest

from tests.support import load_module

initscripts = load_module("_modules", "gopbx_initscripts")


@pytest.fixture
def configure_loader_modules():
    return {initscripts: {"__opts__": {}, "__salt__": {}, "__context__": {}}}


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
