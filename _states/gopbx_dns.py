"""
The region's DNS zone kept in Vultr's DNS (the dns formula, ``dns:server: vultr``).

.. code-block:: yaml

    dns-zone-records-managed:
      gopbx_dns.vultr_records_managed:
        - name: gopbx.au
        - records:
          - {name: api, type: A, data: 149.28.188.104, ttl: 300, priority: 0}
          - {name: _sip._udp, type: SRV, data: 0 5060 sip.gopbx.au, ttl: 30, priority: 10}
        - failover_names: [sip]
        - api_key: ...

Each name and type the records mention holds exactly those records; names and
types they do not mention (Vultr's own SOA and NS, anything an operator added)
are left alone. The A records of ``failover_names`` belong to the SIP edge's
reconcile (gopbx_edge): they are created when missing and never overwritten, so
a highstate never undoes a failover.
"""

from itertools import groupby

__virtualname__ = "gopbx_dns"


def __virtual__():
    return __virtualname__


def _wanted_groups(records):
    key = lambda record: (record["name"], record["type"])  # noqa: E731
    return {group: [{"data": r["data"], "ttl": r["ttl"], "priority": r.get("priority", 0)} for r in items]
            for group, items in groupby(sorted(records, key=key), key=key)}


def _differs(existing, name, record_type, wanted):
    have = sorted((item["data"], item.get("ttl"), item.get("priority", 0)) for item in existing
                  if item["name"] == name and item["type"] == record_type)
    return have != sorted((record["data"], record["ttl"], record["priority"]) for record in wanted)


def vultr_records_managed(name, records, api_key, failover_names=(), url="https://api.vultr.com/v2"):
    """The zone NAME at Vultr holds RECORDS (see the module's description)."""
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    vultr = __utils__["gopbx_vultr.client"](api_key, url=url)  # noqa: F821  (a loader dunder)
    try:
        existing = vultr.dns_records(name)
        pending = []
        for (label, record_type), wanted in _wanted_groups(records).items():
            if record_type == "A" and label in failover_names:
                present = any(item["name"] == label and item["type"] == "A" for item in existing)
                if not present:
                    pending.append((label, record_type, wanted))
            elif _differs(existing, label, record_type, wanted):
                pending.append((label, record_type, wanted))
        for label, record_type, wanted in pending:
            ret["changes"][f"{label} {record_type}"] = [record["data"] for record in wanted]
        if not pending:
            ret["comment"] = f"the zone {name} holds its records"
            return ret
        if __opts__["test"]:  # noqa: F821
            ret.update(result=None, comment=f"{len(pending)} record sets of {name} would be set")
            return ret
        for label, record_type, wanted in pending:
            vultr.set_dns_records(name, label, record_type, wanted, existing=existing)
        ret["comment"] = f"{len(pending)} record sets of {name} set"
    except Exception as exc:  # noqa: BLE001  (Vultr's message, as the state's comment)
        ret.update(result=False, comment=f"Vultr DNS for {name}: {exc}", changes={})
    return ret
