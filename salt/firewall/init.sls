{#- ufw: deny what is not allowed; the roles' public ports from anywhere, their
    control ports only from the private networks (saltext-ufw's states). Rules go
    in before ufw is enabled, so SSH stays open. #}
{%- from 'firewall/map.jinja' import firewall with context %}
{%- if firewall.enabled %}

firewall-ufw-pkg-installed:
  pkg.installed:
    - name: ufw

firewall-incoming-denied:
  ufw.default_policy:
    - policy: deny
    - direction: incoming
    - require:
      - pkg: firewall-ufw-pkg-installed

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
{%- endfor %}

firewall-ufw-enabled:
  ufw.enabled:
    - require:
      - ufw: firewall-incoming-denied
{%- endif %}
