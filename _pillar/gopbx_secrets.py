"""
Each minion's secrets: those its roles' formulas declare, and no others.

The region's secrets live in one GPG-encrypted file outside pillar_roots, so no
top file can hand it out whole. This external pillar reads it for each minion
and keeps only what the formulas of the minion's roles name in their
``defaults.yaml`` (``required_secrets``, and ``optional_secrets`` a formula uses
when present). A media node therefore never holds a database, API or Redis secret.

Roles come from the minion's pillar (assigned by minion id in the pillar top);
a role's formulas are the ``include`` list of ``roles/<role>.sls`` in the
file roots, the same file its highstate runs.

Master (or masterless minion) configuration::

    pillar_dirs: [/srv/gopbx/_pillar]
    ext_pillar:
      - gopbx_secrets: /srv/gopbx-site/secrets.sls
"""

import logging
import os

import salt.loader
import salt.template
import salt.utils.data
import salt.utils.yaml

log = logging.getLogger(__name__)

__virtualname__ = "gopbx_secrets"
DECLARATIONS = ("required_secrets", "optional_secrets")


def __virtual__():
    return __virtualname__


def _tree_file(relative):
    """The first file roots' copy of a state-tree file, as the file server would pick it."""
    for root in __opts__["file_roots"].get("base", []):  # noqa: F821  (a loader dunder)
        path = os.path.join(root, relative)
        if os.path.isfile(path):
            return path
    return None


def _yaml(relative):
    path = _tree_file(relative)
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return salt.utils.yaml.safe_load(handle) or {}


def formulas(roles):
    """The formulas the given roles run (``roles/<role>.sls`` include lists); unknown roles add none."""
    found = []
    for role in roles:
        role_sls = _yaml(f"roles/{role}.sls") if isinstance(role, str) else None
        for sls in (role_sls or {}).get("include", []):
            formula = sls.split(".")[0]
            if formula not in found:
                found.append(formula)
    return found


def secret_keys(formula):
    """Colon paths under ``secrets`` that a formula declares ('name' means '<formula>:name')."""
    defaults = _yaml(f"{formula}/defaults.yaml") or {}
    names = [name for declaration in DECLARATIONS for name in defaults.get(declaration) or []]
    return [name if ":" in name else f"{formula}:{name}" for name in names]


def _load(path):
    """The secrets file, rendered as its shebang says (``#!yaml|gpg`` on production; plain YAML without one)."""
    renderers = salt.loader.render(__opts__, __salt__)  # noqa: F821  (loader dunders)
    data = salt.template.compile_template(
        path, renderers, "yaml", __opts__["renderer_blacklist"], __opts__["renderer_whitelist"]  # noqa: F821
    )
    return data if isinstance(data, dict) else {}


def ext_pillar(minion_id, pillar, path):  # pylint: disable=unused-argument
    roles = pillar.get("roles")
    roles = roles if isinstance(roles, list) else []
    wanted = sorted({key for formula in formulas(roles) for key in secret_keys(formula)})
    if not wanted:
        return {}
    if not os.path.isfile(path):
        log.error("gopbx_secrets: %s is missing; %s gets no secrets", path, minion_id)
        return {}
    every = _load(path).get("secrets") or {}
    picked = {}
    for key in wanted:
        value = salt.utils.data.traverse_dict(every, key, None, delimiter=":")
        if value is not None:
            group, name = key.split(":", 1)
            picked.setdefault(group, {})[name] = value
    return {"secrets": picked}
