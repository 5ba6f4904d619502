"""
What FreeSWITCH 1.10 does with what this tree gives it, as read from its source,
for the tests that stand in for a node (FreeSWITCH can't be installed here). Last
round the doubles accepted four things a real FreeSWITCH refuses; each rule here
is one of those. The rules live in the lab's FreeSWITCH double
(lab/salt/freeswitch_double/files/freeswitch_double.py), which acts on them in the
multi-host lab; the tests read the same rules from there.
"""

import importlib.util

from tests.support import REPO

_spec = importlib.util.spec_from_file_location(
    "gopbx_freeswitch_double", REPO / "lab" / "salt" / "freeswitch_double" / "files" / "freeswitch_double.py")
_double = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_double)

# Applications FreeSWITCH runs inline (mod_dptools' SAF_ROUTING_EXEC): 'limit' is not one.
INLINE_APPLICATIONS = frozenset(_double.INLINE)
# (request URI, route, b-leg variables) of a sofia dial string: the first <...> wins.
sofia_destination = _double.sofia_destination
# mod_event_socket's and sofia's ACL check: first matching node, else the list's default.
acl_allows = _double.acl_allows
# An event-socket client's command, as mod_event_socket reads it.
read_esl_command = _double.read_esl_command


def inline_refusals(dialplan):
    """The actions of a dialplan document (an Element) FreeSWITCH would refuse to run inline."""
    return [action.get("application") for action in dialplan.iter()
            if action.tag in ("action", "anti-action") and action.get("inline") == "true"
            and action.get("application") not in INLINE_APPLICATIONS]


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
