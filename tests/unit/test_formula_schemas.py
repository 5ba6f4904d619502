"""Each formula's defaults.yaml, schema.yaml and pillar.example name the same keys."""

import pytest
import yaml

from tests.support import REPO

DECLARATIONS = {"required_secrets", "optional_secrets"}
FORMULAS = sorted(path.parent for path in [*REPO.glob("salt/*/defaults.yaml"), *REPO.glob("lab/salt/*/defaults.yaml")])


def schema_keys(schema, prefix=""):
    found = set()
    for key, value in (schema.get("properties") or {}).items():
        found.add(prefix + key)
        if value.get("properties"):
            found |= schema_keys(value, f"{prefix}{key}:")
    return found


def test_every_formula_is_checked():
    names = {path.name for path in FORMULAS}
    assert {"postgres", "kamailio", "freeswitch", "api", "nginx", "salt_master", "media_standin"} <= names


@pytest.mark.parametrize("formula", FORMULAS, ids=lambda path: path.name)
def test_defaults_schema_and_example_name_the_same_keys(formula):
    defaults = yaml.safe_load((formula / "defaults.yaml").read_text())
    schema = yaml.safe_load((formula / "schema.yaml").read_text())
    example = yaml.safe_load((formula / "pillar.example").read_text())[formula.name]
    settings = {key: value for key, value in defaults.items() if key not in DECLARATIONS}
    declared = schema_keys(schema)
    # Mappings the schema leaves open (dispatcher_sets, login_roles, placement) are compared at their own level.
    open_maps = {key for key in declared if not schema_keys_at(schema, key)}
    assert keys_within(settings, declared, open_maps) == declared
    assert keys_within(example, declared, open_maps) == declared
    assert set(schema["required"]) == set(schema["properties"])
    assert schema.get("additionalProperties") is False


def schema_keys_at(schema, path):
    node = schema
    for part in path.split(":"):
        node = node["properties"][part]
    return node.get("properties")


def keys_within(tree, declared, open_maps, prefix=""):
    found = set()
    for key, value in tree.items():
        path = prefix + str(key)
        found.add(path)
        if isinstance(value, dict) and path not in open_maps:
            found |= keys_within(value, declared, open_maps, path + ":")
    return found
