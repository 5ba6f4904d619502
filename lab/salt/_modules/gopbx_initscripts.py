"""
Salt's service provider for hosts that have systemctl installed but do not run
systemd as PID 1 (the single-host lab container).

There Salt loads ``systemd_service`` in "offline" mode, and every ``service``
state then reports "Running in OFFLINE mode. Nothing to do" without looking at
the service. The ``providers`` option can map ``service`` to ``debian_service``,
but it only overlays that module's functions, so ``service.offline`` still comes
from systemd. Naming this module as the provider overlays all of
``debian_service``'s functions (the init scripts) plus an ``offline`` that is
false. Production hosts run systemd and do not use it.

.. code-block:: yaml

    providers:
      service: gopbx_initscripts
"""

import salt.loader

__virtualname__ = "gopbx_initscripts"

DELEGATED = (
    "available", "missing", "get_all", "get_enabled", "get_disabled", "status", "start", "stop",
    "restart", "reload", "force_reload", "disable", "enabled", "disabled",
)


def __virtual__():
    return __virtualname__


def _debian_service():
    if "gopbx_initscripts.debian_service" not in __context__:  # noqa: F821
        __context__["gopbx_initscripts.debian_service"] = salt.loader.raw_mod(  # noqa: F821
            __opts__, "debian_service", __salt__  # noqa: F821
        )
    return __context__["gopbx_initscripts.debian_service"]  # noqa: F821


def offline():
    """
    False: services are driven through their init scripts, not skipped.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_initscripts.offline
    """
    return False


def enable(name, **kwargs):  # pylint: disable=unused-argument
    """
    Enable the service at boot with update-rc.d alone (debian_service runs
    insserv first, which Debian 12 no longer ships).

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_initscripts.enable gopbx-media-standin
    """
    run = __salt__["cmd.retcode"]  # noqa: F821
    return run(["update-rc.d", name, "defaults"], python_shell=False) == 0 and run(
        ["update-rc.d", name, "enable"], python_shell=False
    ) == 0


def _delegate(name):
    def call(*args, **kwargs):
        return _debian_service()[f"debian_service.{name}"](*args, **kwargs)

    call.__name__ = name
    call.__doc__ = f"debian_service.{name}: the service's Debian init script."
    return call


for _name in DELEGATED:
    globals()[_name] = _delegate(_name)
