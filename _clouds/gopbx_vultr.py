"""
salt-cloud driver for Vultr's API v2 (Salt 3008 ships none; its old one spoke the
retired v1), on the client in ``_utils/gopbx_vultr.py``.

    salt-cloud -p freeswitch fs-syd-3      # create; the VM joins as minion fs-syd-3
    salt-cloud -d fs-syd-3                 # deregister from Kamailio first, then destroy
    salt-cloud -Q / -F / --list-locations vultr / --list-sizes vultr / --list-images vultr

A VM bootstraps by cloud-init, no git clone and no SSH from the master: salt-cloud
makes the minion's key pair and accepts its public key on the master (its own
pre-seeding; the operator who runs ``salt-cloud -p`` is the explicit step), and the
driver hands cloud-init the keys, the minion id and the master. If no VM comes of
it, the key is removed again. The minion installs Salt
from the Salt Project's repository and runs its highstate on start; a media node
then announces itself (``gopbx/freeswitch/ready``) and the master places it.

Provider settings: ``api_key``, else the environment's ``VULTR_API_KEY``, else the
file ``api_key_file`` (made from encrypted pillar); ``api_url``; ``minion: {master:}``.
Profile settings: ``location`` (region id), ``size`` (plan id), ``image`` (OS name),
``name_prefix`` (names must be ``<prefix>-<location>-<n>``), optional ``tags``,
``vpc_ids``, ``salt_version`` and ``wait_for_active_timeout``.
"""

import logging
import os
import re

import salt.config as config
import salt.utils.cloud
import salt.utils.yaml
from salt.exceptions import SaltCloudException, SaltCloudSystemExit

log = logging.getLogger(__name__)
__virtualname__ = "gopbx_vultr"
SALT_REPO = "https://packages.broadcom.com/artifactory/saltproject-deb"
SALT_KEY_URL = "https://packages.broadcom.com/artifactory/api/security/keypair/SaltProjectKey/public"
# What the states need in Salt's own Python besides Salt (as in requirements/salt.txt):
# the pillar schemas' validator and the ufw states.
SALT_EXTENSIONS = ["jsonschema==4.26.0", "saltext-ufw==0.8.3"]
MEDIA_NODE = re.compile(r"^fs-[a-z]+-[0-9]+$")


def __virtual__():
    if get_configured_provider() is False:
        return False
    return __virtualname__


def _provider_name():
    return __active_provider_name__ or __virtualname__  # noqa: F821  (a loader dunder)


def get_configured_provider():
    return config.is_provider_configured(__opts__, _provider_name(), ())  # noqa: F821


def _setting(name, vm_=None, default=None):
    return config.get_cloud_config_value(name, vm_ or get_configured_provider(), __opts__,  # noqa: F821
                                         default=default, search_global=False)


def _api_key():
    """The provider's api_key, else the environment's VULTR_API_KEY, else the file api_key_file."""
    key = _setting("api_key") or os.environ.get("VULTR_API_KEY", "")
    if not key and _setting("api_key_file"):
        with open(_setting("api_key_file"), encoding="utf-8") as handle:
            key = handle.read().strip()
    return key


def _client():
    return __utils__["gopbx_vultr.client"](_api_key(), url=_setting("api_url", default="https://api.vultr.com/v2"))  # noqa: F821


def _call(method, *args, **kwargs):
    """A Vultr call whose failure ends the salt-cloud run with Vultr's own message."""
    try:
        return getattr(_client(), method)(*args, **kwargs)
    except SaltCloudException:
        raise
    except Exception as exc:
        raise SaltCloudSystemExit(str(exc)) from None


def _fire(action, name, **args):
    __utils__["cloud.fire_event"]("event", f"{action} instance", f"salt/cloud/{name}/{action}",  # noqa: F821
                                  args={"name": name, **args}, sock_dir=__opts__["sock_dir"],  # noqa: F821
                                  transport=__opts__["transport"])  # noqa: F821


# --- listings ---


def _function_only(call, name, usage):
    if call == "action":
        raise SaltCloudSystemExit(f"{name} is a function: use {usage}")


def avail_locations(call=None):
    _function_only(call, "avail_locations", "-f or --list-locations")
    return {region["id"]: region for region in _call("regions")}


def avail_sizes(call=None):
    _function_only(call, "avail_sizes", "-f or --list-sizes")
    return {plan["id"]: plan for plan in _call("plans")}


def avail_images(call=None):
    _function_only(call, "avail_images", "-f or --list-images")
    return {image["name"]: image for image in _call("operating_systems")}


def list_nodes_full(call=None):
    _function_only(call, "list_nodes_full", "-F")
    return {instance["label"]: instance for instance in _call("instances")}


def list_nodes(call=None):
    _function_only(call, "list_nodes", "-Q")
    return {label: {"id": item["id"], "image": item.get("os"), "size": item.get("plan"),
                    "state": item.get("status"), "private_ips": [item["internal_ip"]] if item.get("internal_ip") else [],
                    "public_ips": [item["main_ip"]] if item.get("main_ip") not in (None, "", "0.0.0.0") else []}
            for label, item in list_nodes_full("function").items()}


def list_nodes_select(call=None):
    return __utils__["cloud.list_nodes_select"](list_nodes_full("function"), __opts__["query.selection"], call)  # noqa: F821


def show_instance(name, call=None):
    if call != "action":
        raise SaltCloudSystemExit("show_instance is an action: use -a show_instance NAME")
    instance = _call("find", name)
    if instance is None:
        raise SaltCloudSystemExit(f"no Vultr instance labelled {name!r}")
    return instance


# --- create ---


def _check_name(name, vm_):
    prefix, location = _setting("name_prefix", vm_), _setting("location", vm_)
    if not prefix or not location:
        raise SaltCloudSystemExit(f"profile {vm_.get('profile')!r} needs name_prefix and location")
    if not re.match(rf"^{re.escape(prefix)}-{re.escape(location)}-[0-9]+$", name):
        raise SaltCloudSystemExit(f"{name!r} is not a name for this profile: use {prefix}-{location}-<n>, "
                                  f"which becomes the minion id")


def user_data(name, master, private_key, public_key, salt_version="3008"):
    """cloud-init: the minion's id, keys and master, Salt from its repository, highstate on start."""
    minion_conf = {"id": name, "master": master, "hash_type": "sha256", "startup_states": "highstate"}
    document = {
        "hostname": name,
        "write_files": [
            {"path": "/etc/salt/minion.d/gopbx.conf", "permissions": "0644",
             "content": salt.utils.yaml.safe_dump(minion_conf, default_flow_style=False)},
            {"path": "/etc/salt/minion_id", "permissions": "0644", "content": name + "\n"},
            {"path": "/etc/salt/pki/minion/minion.pem", "permissions": "0400", "content": private_key},
            {"path": "/etc/salt/pki/minion/minion.pub", "permissions": "0644", "content": public_key},
            {"path": "/etc/apt/sources.list.d/salt.sources", "permissions": "0644",
             "content": f"Types: deb\nURIs: {SALT_REPO}\nSuites: stable\nComponents: main\n"
                        "Signed-By: /etc/apt/keyrings/salt-archive-keyring.pgp\n"},
            {"path": "/etc/apt/preferences.d/salt-pin-1001", "permissions": "0644",
             "content": f"Package: salt-*\nPin: version {salt_version}.*\nPin-Priority: 1001\n"},
        ],
        "runcmd": [
            ["mkdir", "-p", "/etc/apt/keyrings"],
            ["curl", "-fsSL", "-o", "/etc/apt/keyrings/salt-archive-keyring.pgp", SALT_KEY_URL],
            ["apt-get", "update"],
            ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "salt-minion"],
            ["salt-pip", "install", *SALT_EXTENSIONS],
            ["systemctl", "enable", "--now", "salt-minion"],
        ],
    }
    return "#cloud-config\n" + salt.utils.yaml.safe_dump(document, default_flow_style=False)


def create(vm_):
    """Create the VM of a profile (salt-cloud -p PROFILE NAME) and wait until it is active."""
    try:
        return _create(vm_)
    except SaltCloudException:
        # No VM came of it (or none that will ever join): the key accepted for it goes.
        salt.utils.cloud.remove_key(__opts__["pki_dir"], vm_["name"])  # noqa: F821
        raise


def _minion_keys(vm_):
    """The minion's key pair: salt-cloud's own (made and accepted before create), or made here."""
    if vm_.get("priv_key") and vm_.get("pub_key"):
        return vm_["priv_key"], vm_["pub_key"]
    private_key, public_key = salt.utils.cloud.gen_keys(_setting("keysize", vm_, default=4096))
    salt.utils.cloud.accept_key(__opts__["pki_dir"], public_key, vm_["name"])  # noqa: F821
    return private_key, public_key


def _create(vm_):
    name = vm_["name"]
    _check_name(name, vm_)
    location, size = _setting("location", vm_), _setting("size", vm_)
    master = (_setting("minion", vm_, default={}) or {}).get("master")
    if not master:
        raise SaltCloudSystemExit("the provider or profile needs minion: {master: ...}")
    if _call("find", name) is not None:
        raise SaltCloudSystemExit(f"a Vultr instance labelled {name!r} already exists")
    os_id = _call("lookup", location, size, _setting("image", vm_))
    _fire("creating", name, profile=vm_.get("profile"), location=location, size=size)
    private_key, public_key = _minion_keys(vm_)
    log.warning("salt-cloud: the key of new minion %s is accepted on this master", name)
    extra = {"attach_vpc": list(_setting("vpc_ids", vm_))} if _setting("vpc_ids", vm_) else {}
    instance = _call("create", name, location, size, os_id,
                     user_data=user_data(name, master, private_key, public_key,
                                         str(_setting("salt_version", vm_, default="3008"))),
                     tags=_setting("tags", vm_, default=[]), extra=extra)
    _fire("requesting", name, id=instance["id"])
    instance = _call("wait_until_active", instance["id"],
                     timeout=_setting("wait_for_active_timeout", vm_, default=600),
                     interval=_setting("wait_for_active_interval", vm_, default=5))
    _fire("created", name, id=instance["id"], main_ip=instance["main_ip"])
    return {key: instance.get(key) for key in ("id", "label", "region", "plan", "main_ip", "internal_ip", "status")}


# --- destroy ---


def _deregister(name):
    """A media node leaves Kamailio's dispatcher before its VM goes (the gopbx.deregister runner)."""
    import salt.loader
    from salt.exceptions import SaltInvocationError

    runners = salt.loader.runner(__opts__, utils=__utils__)  # noqa: F821  (the master's configuration)
    try:
        result = runners["gopbx.deregister"](name)
    except SaltInvocationError as exc:
        if "no media node" not in str(exc):
            raise SaltCloudSystemExit(f"{name} could not be deregistered, so it was not destroyed: {exc}") from None
        log.info("salt-cloud: %s was never registered as a media node", name)
        return
    except Exception as exc:  # the database or Kamailio is down: keep the VM rather than strand calls
        raise SaltCloudSystemExit(f"{name} could not be deregistered, so it was not destroyed: {exc}") from None
    log.warning("salt-cloud deregistered %s before destroying it: %s", name, result)


def destroy(name, call=None):
    """Destroy a VM (salt-cloud -d NAME); a media node is deregistered first."""
    if call == "function":
        raise SaltCloudSystemExit("destroy is an action: use -d NAME or -a destroy NAME")
    instance = _call("find", name)
    if instance is None:
        raise SaltCloudSystemExit(f"no Vultr instance labelled {name!r}")
    _fire("destroying", name, id=instance["id"])
    if MEDIA_NODE.match(name):
        _deregister(name)
    _call("delete", instance["id"])
    _fire("destroyed", name, id=instance["id"])
    return {"id": instance["id"], "destroyed": True}
