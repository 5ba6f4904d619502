"""
What FreeSWITCH 1.10 does with what this tree gives it, as read from its source,
for the tests that stand in for a node (FreeSWITCH can't be installed here). Last
round the doubles accepted four things a real FreeSWITCH refuses; each rule here
is one of those, with where in FreeSWITCH's source it comes from.
"""

import ipaddress
import re

# Applications FreeSWITCH runs inline (while hunting the dialplan): those that
# mod_dptools registers with SAF_ROUTING_EXEC. Anything else with inline="true"
# logs "This application cannot be executed inline" and does nothing: 'limit',
# registered with SAF_SUPPORT_NOMEDIA only, among them.
INLINE_APPLICATIONS = frozenset({
    "bridge_export", "check_acl", "cng_plc", "early_hangup", "eval", "event", "export", "info", "log", "multiset",
    "multiunset", "novideo", "presence", "push", "set", "set_global", "set_media_stats", "set_profile_var",
    "set_user", "set_zombie_exec", "stop", "unset", "unshift", "verbose_events"})


def inline_refusals(dialplan):
    """The actions of a dialplan document (an Element) FreeSWITCH would refuse to run inline."""
    return [action.get("application") for action in dialplan.iter()
            if action.tag in ("action", "anti-action") and action.get("inline") == "true"
            and action.get("application") not in INLINE_APPLICATIONS]


def sofia_destination(dial_string):
    """
    Where mod_sofia sends a bridge to ``{vars}sofia/<profile>/<destination>``, as
    sofia_glue_get_destination does: if the destination holds a '<', only what
    lies between the first '<' and '>' counts (so 'sip:1@t;fs_path=<sip:proxy>'
    calls the proxy itself); ';fs_path=' then splits off the route (up to the
    next ';' or '>'). Returns (request URI, route or None, the b-leg's variables
    from the leading {...}: the only place a b-leg-only variable such as
    sip_invite_domain can be set from the a-leg's dialplan).
    """
    match = re.fullmatch(r"(?:\{([^}]*)\})?sofia/([^/]+)/(.+)", dial_string)
    assert match, f"not a sofia dial string: {dial_string!r}"
    variables = dict(item.split("=", 1) for item in match.group(1).split(",")) if match.group(1) else {}
    contact = match.group(3)
    if "<" in contact:
        contact = contact[contact.index("<") + 1:].split(">", 1)[0]
    route = None
    if ";fs_path=" in contact:
        contact, route = contact.split(";fs_path=", 1)
        route = re.split(r"[;>]", route, maxsplit=1)[0]
    return contact, route, variables


def acl_allows(acl_list, address):
    """mod_event_socket's and sofia's ACL check: a <list default=...> of <node type= cidr=>, first match wins."""
    for node in acl_list:
        if ipaddress.ip_address(address) in ipaddress.ip_network(node.get("cidr"), strict=False):
            return node.get("type") == "allow"
    return acl_list.get("default") == "allow"


# Which fs_cli command makes a changed file take effect without a restart
# (mod_xml_curl reads its bindings only when it loads: reloadxml leaves the old
# URL and credentials in place). Files not listed need a profile or module
# restart, which the formula leaves to an operator after a drain.
RELOAD_COMMANDS = {
    "autoload_configs/xml_curl.conf.xml": "reload mod_xml_curl",
    "autoload_configs/acl.conf.xml": "reloadacl",
    "freeswitch.xml": "reloadxml",
    "vars.xml": "reloadxml",
}


def reload_refusals(config_files_by_command):
    """Files whose change the formula answers with a command that does not apply it."""
    return [(path, command) for command, paths in config_files_by_command.items() for path in paths
            if path in RELOAD_COMMANDS and RELOAD_COMMANDS[path] not in command]
