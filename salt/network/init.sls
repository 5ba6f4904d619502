{#- The seed's internal service network (172.28.0.0/24) as a dummy interface holding
    every service address of the plan. In the lab the plan is 127.28.0.0/24 on
    loopback, where the whole 127/8 is already local, so there is nothing to do. #}
{%- set plan = salt['gopbx_pillar.network']() %}
{%- set interface = plan.internal.interface %}
{#- A dummy link by default; a bridge with no ports holds addresses just as well
    where the kernel has no dummy driver (the multi-host lab's machines). #}
{%- set link_type = plan.internal.get('link_type', 'dummy') %}
{#- The coordinator holds every service address of the plan (the whole network);
    a host that runs only some (network:internal:local_services, the Kamailio
    standby's own RTPEngine and Kamailio) holds just those, so the rest of the
    plan is still routed to the coordinator over the mesh. #}
{%- set local_services = plan.internal.get('local_services') %}
{%- if local_services %}
{%-   set prefix = '32' %}
{%-   set addresses = [] %}
{%-   for name in local_services %}{% do addresses.append(plan.services[name]) %}{% endfor %}
{%-   set addresses = addresses | unique | sort %}
{%- else %}
{%-   set prefix = plan.internal.cidr.split('/')[1] %}
{%-   set addresses = plan.services.values() | unique | sort %}
{%- endif %}

{%- if interface != 'lo' %}
network-internal-interface-config-managed:
  file.managed:
    - name: /etc/network/interfaces.d/{{ interface }}
    - mode: '0644'
    - contents: |
        # Managed by Salt (network formula): GoPBX's internal service network.
        auto {{ interface }}
        iface {{ interface }} inet manual
            pre-up ip link add {{ interface }} type {{ link_type }} || true
            up ip link set {{ interface }} up
        {%- for address in addresses %}
            up ip addr add {{ address }}/{{ prefix }} dev {{ interface }}
        {%- endfor %}
            post-down ip link del {{ interface }}

network-internal-interface-up:
  cmd.run:
    - name: ifdown --force {{ interface }}; ifup {{ interface }}
    - onchanges:
      - file: network-internal-interface-config-managed
{%- endif %}
