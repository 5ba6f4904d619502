"""
pgBouncer follows the region's database primary (``gopbx_patroni`` module).

.. code-block:: yaml

    pgbouncer-follows-primary:
      gopbx_patroni.pgbouncer_follows:
        - name: /etc/pgbouncer/databases.ini
"""

__virtualname__ = "gopbx_patroni"


def __virtual__():
    return __virtualname__


def pgbouncer_follows(name):
    """pgBouncer's [databases] file (NAME) names the running primary."""
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    module = __salt__  # noqa: F821  (a loader dunder)
    target = module["gopbx_patroni.primary"]()
    if target is None:
        ret["result"] = False
        ret["comment"] = "No member of postgres:patroni:members reports a running primary"
        return ret
    wanted = module["gopbx_patroni.databases_section"](target)
    try:
        with open(name, encoding="utf-8") as handle:
            current = handle.read()
    except OSError:
        current = None
    if current == wanted:
        ret["comment"] = f"pgBouncer points at the primary, {target['name']}"
        return ret
    ret["changes"] = {"primary": target["name"], "host": target["host"]}
    if __opts__["test"]:  # noqa: F821
        ret["result"] = None
        ret["comment"] = f"pgBouncer would point at the primary, {target['name']}"
        return ret
    module["gopbx_patroni.point_pgbouncer"](target, name)
    ret["comment"] = f"pgBouncer points at the primary, {target['name']}"
    return ret
