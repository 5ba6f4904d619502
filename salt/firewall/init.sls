{#- ufw: deny what is not allowed; the roles' public ports from anywhere, their
    control ports only from the private networks (saltext-ufw's states). Rules go
    in before ufw is enabled, so SSH stays open; the default policy (deny incoming,
    ufw's own default too) is asserted once ufw runs: saltext-ufw sets it only then. #}
{%- from 'firewall/map.jinja' import firewall with context %}
{%- if firewall.enabled %}

firewall-ufw-pkg-installed:
  pkg.installed:
    - name: ufw


{%- for spec in firewall.public %}
{%-   set port, proto = spec.split('/') %}

firewall-public-{{ spec }}-allowed:
  ufw.rule_present:
    - dport: '{{ port }}'
    - proto: {{ proto }}
    - comment: gopbx public
    - require:
      - pkg: firewall-ufw-pkg-installed
    - require_in:
      - ufw: firewall-ufw-enabled
{%- endfor %}

{%- for source in firewall.private_sources %}
{%-   for spec in firewall.private %}
{%-     set port, proto = spec.split('/') %}

firewall-private-{{ spec }}-from-{{ source }}-allowed:
  ufw.rule_present:
    - src: {{ source }}
    - dport: '{{ port }}'
    - proto: {{ proto }}
    - comment: gopbx private
    - require:
      - pkg: firewall-ufw-pkg-installed
    - require_in:
      - ufw: firewall-ufw-enabled
{%-   endfor %}

{#- The salt-master's side of this minion's connections (4505/4506): they were
    opened before ufw ran, so its connection tracking sees them mid-stream, as new
    packets, which the default deny would drop and leave the minion deaf. #}
firewall-salt-master-from-{{ source }}-allowed:
  ufw.rule_present:
    - src: {{ source }}
    - sport: '4505:4506'
    - proto: tcp
    - comment: gopbx salt-master
    - require:
      - pkg: firewall-ufw-pkg-installed
    - require_in:
      - ufw: firewall-ufw-enabled
{%- endfor %}

{%- for source in firewall.mesh_sources %}
{%-   for spec in firewall.mesh %}
{%-     set port, proto = spec.split('/') %}

firewall-mesh-{{ spec }}-from-{{ source }}-allowed:
  ufw.rule_present:
    - src: {{ source }}
    - dport: '{{ port }}'
    - proto: {{ proto }}
    - comment: gopbx mesh
    - require:
      - pkg: firewall-ufw-pkg-installed
    - require_in:
      - ufw: firewall-ufw-enabled
{%-   endfor %}
{%- endfor %}

{#- VRRP (IP protocol 112, no ports) from the SIP edge peers alone: ufw's rule
    syntax has no portless protocol rule that saltext-ufw accepts, so it goes in
    ufw's own before.rules, which ufw loads with its rules. #}
{%- if firewall.vrrp_sources %}
firewall-vrrp-peers-allowed:
  file.blockreplace:
    - name: /etc/ufw/before.rules
    - marker_start: '# gopbx vrrp: managed by Salt (firewall formula)'
    - marker_end: '# gopbx vrrp: end'
    - content: {{ firewall.vrrp_sources | map('regex_replace', '^(.*)$', '-A ufw-before-input -p vrrp -s \\1 -j ACCEPT')
                  | join('\n') | json }}
    - insert_before_match: "^# don't delete the 'COMMIT' line"
    - append_newline: True
    - backup: False
    - require:
      - pkg: firewall-ufw-pkg-installed
    - require_in:
      - ufw: firewall-ufw-enabled

firewall-vrrp-peers-loaded:
  cmd.run:
    - name: ufw reload
    - onlyif: "ufw status | grep -q 'Status: active'"
    - onchanges:
      - file: firewall-vrrp-peers-allowed
{%- endif %}

firewall-ufw-enabled:
  ufw.enabled:
    - require:
      - pkg: firewall-ufw-pkg-installed

firewall-incoming-denied:
  ufw.default_policy:
    - policy: deny
    - direction: incoming
    - require:
      - ufw: firewall-ufw-enabled
{%- endif %}
