{#- After the node's first successful highstate (everything in the freeswitch
    formula applied, FreeSWITCH running), tell the master: address, capacity and
    the hash of its xml_curl password. The master's reactor and runner check it
    all and put the node in Kamailio's dispatcher. Sent again only when one of
    these changes; a failed run sends nothing and is retried by the next one. #}
{%- from 'freeswitch/map.jinja' import freeswitch with context %}
{%- set ready = {'address': freeswitch.address, 'capacity': freeswitch.capacity,
                 'xml_curl_password_hash': freeswitch.xml_curl.password_hash} %}
{%- set fingerprint = ready | json | sha256 %}
{#- In the minion's cache: if it is ever cleared, the node just announces itself again. #}
{%- set marker = opts.cachedir ~ '/gopbx/freeswitch-ready' %}

{#- Written first: the master's runner asks the node what it announced
    (gopbx_freeswitch.announcement) before it believes an event naming it. #}
freeswitch-ready-announcement-written:
  file.managed:
    - name: {{ opts.cachedir }}/gopbx/freeswitch-announcement.json
    - contents: {{ ready | json | json }}
    - makedirs: True
    - mode: '0644'
    - require:
      - sls: freeswitch

freeswitch-ready-event-sent:
  event.send:
    - name: gopbx/freeswitch/ready
    - data: {{ ready | json }}
    - unless: test "$(cat {{ marker }} 2>/dev/null)" = "{{ fingerprint }}"
    - require:
      - file: freeswitch-ready-announcement-written

freeswitch-ready-recorded:
  file.managed:
    - name: {{ marker }}
    - contents: {{ fingerprint }}
    - makedirs: True
    - mode: '0644'
    - require:
      - event: freeswitch-ready-event-sent
