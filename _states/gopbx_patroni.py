"""
pgBouncer follows the region's database primary, and the cluster's dynamic
configuration follows pillar (``gopbx_patroni`` module).

.. code-block:: yaml

    pgbouncer-follows-primary:
      gopbx_patroni.pgbouncer_follows:
        - name: /etc/pgbouncer/databases.ini

    postgres-patroni-dynamic-config:
      gopbx_patroni.dynamic_config:
        - name: gopbx-au
        - settings: {ttl: 10, loop_wait: 2}
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


def dynamic_config(name, settings):
    """
    The cluster NAME's dynamic configuration (in etcd) holds SETTINGS. Patroni
    reads ``bootstrap.dcs`` once, when the cluster is made; later pillar changes
    reach the cluster only through its REST API, which this state uses.
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    module = __salt__  # noqa: F821
    current = module["gopbx_patroni.dynamic_config"]()
    if current is None:
        ret["result"] = False
        ret["comment"] = "No member of postgres:patroni:members gave the cluster's configuration"
        return ret
    differ = {key: value for key, value in settings.items() if current.get(key) != value}
    if not differ:
        ret["comment"] = "The cluster's dynamic configuration matches pillar"
        return ret
    ret["changes"] = {key: {"old": current.get(key), "new": value} for key, value in differ.items()}
    if __opts__["test"]:  # noqa: F821
        ret["result"] = None
        ret["comment"] = f"Would set {', '.join(sorted(differ))} in the cluster's dynamic configuration"
        return ret
    answer = module["gopbx_patroni.set_dynamic_config"](differ)
    if answer["status"] != 200:
        ret["result"] = False
        ret["changes"] = {}
        ret["comment"] = f"Patroni refused the change ({answer['status']}): {answer['answer']}"
        return ret
    ret["comment"] = f"Set {', '.join(sorted(differ))} in the cluster's dynamic configuration"
    return ret
