{#- FreeSWITCH 1.10 on a media node (FreeSWITCH only, no shared services): the
    whole configuration in config_dir, rendered here and nothing else left there;
    users and dialplans from the API over mod_xml_curl. #}
{%- from 'freeswitch/map.jinja' import freeswitch with context %}
{%- set config_files = ['freeswitch.xml', 'vars.xml'] %}
{%- for name in ['acl', 'console', 'event_socket', 'hash', 'logfile', 'modules', 'opus', 'sofia', 'switch',
                 'xml_curl'] %}
{%-   do config_files.append('autoload_configs/' ~ name ~ '.conf.xml') %}
{%- endfor %}

{#- What provides the freeswitch service: SignalWire's packages, or (lab only,
    freeswitch:binary 'double') a named double, since FreeSWITCH has no Debian 12 package. #}
{%- set binary_installed = 'pkg: freeswitch-pkg-installed' if freeswitch.binary == 'package'
                           else 'sls: freeswitch_double' %}

include:
  - common
{%- if freeswitch.binary == 'double' %}
  - freeswitch_double
{%- endif %}

{%- if freeswitch.binary == 'package' and freeswitch.repo %}
{%- set repo_url = 'https://freeswitch.signalwire.com/repo/deb/debian-release' %}
{#- SignalWire's repository needs a personal access token, for apt and for the key
    (gopbx_pillar checks it is there when freeswitch:repo is on). #}
freeswitch-repo-auth-managed:
  file.managed:
    - name: /etc/apt/auth.conf.d/freeswitch.conf
    - contents: 'machine freeswitch.signalwire.com login signalwire password {{ salt['pillar.get']('secrets:freeswitch:signalwire_token') }}'
    - mode: '0600'
    - show_changes: False

freeswitch-repo-keyring-present:
  cmd.run:
    - name: >-
        curl --fail --silent --show-error --netrc-file /etc/apt/auth.conf.d/freeswitch.conf
        --output /usr/share/keyrings/signalwire-freeswitch-repo.gpg
        {{ repo_url }}/signalwire-freeswitch-repo.gpg
    - creates: /usr/share/keyrings/signalwire-freeswitch-repo.gpg
    - require:
      - file: freeswitch-repo-auth-managed

freeswitch-repo-managed:
  pkgrepo.managed:
    - name: deb [signed-by=/usr/share/keyrings/signalwire-freeswitch-repo.gpg] {{ repo_url }}/ {{ grains.oscodename }} main
    - file: /etc/apt/sources.list.d/freeswitch.list
    - aptkey: False
    - require:
      - cmd: freeswitch-repo-keyring-present
    - require_in:
      - {{ binary_installed }}
{%- endif %}

{%- if freeswitch.binary == 'package' %}

freeswitch-pkg-installed:
  pkg.installed:
    - pkgs: {{ freeswitch.packages | json }}
{%- endif %}

{#- clean: whatever the packages or a hand left here (a vanilla directory with
    its default users, say) goes; only the files below stay. #}
freeswitch-config-dir-managed:
  file.directory:
    - name: {{ freeswitch.config_dir }}
    - user: root
    - group: freeswitch
    - mode: '0750'
    - clean: True
    - require:
      - {{ binary_installed }}

{%- for path in config_files %}

freeswitch-config-{{ path }}-managed:
  file.managed:
    - name: {{ freeswitch.config_dir }}/{{ path }}
    - source: salt://freeswitch/files/{{ path }}.jinja
    - template: jinja
    - context:
        freeswitch: {{ freeswitch | json }}
    - user: root
    - group: freeswitch
    - mode: '0640'
    - makedirs: True
    - dir_mode: '0750'
    - show_changes: False
    - require:
      - {{ binary_installed }}
    - require_in:
      - file: freeswitch-config-dir-managed
{%- endfor %}

{#- fs_cli on the node reaches the event socket on the private address. #}
freeswitch-fs-cli-config-managed:
  file.managed:
    - name: /etc/fs_cli.conf
    - contents: |
        [default]
        host => {{ freeswitch.address }}
        port => {{ freeswitch.esl_port }}
        password => {{ freeswitch.secrets.esl_password }}
    - mode: '0600'
    - show_changes: False

freeswitch-service-running:
  service.running:
    - name: freeswitch
    - enable: True
    - require:
      - {{ binary_installed }}
      - file: freeswitch-config-dir-managed

{#- Not a restart, which would drop every call on the node: new users, dialplan
    and ACLs take effect on reloadxml/reloadacl. mod_xml_curl reads its bindings
    only when it loads, so a new URL or credentials need 'reload mod_xml_curl'
    (reloadxml does not). A new address or port for the SIP profile or the event
    socket needs 'sofia profile NAME restart' / 'reload mod_event_socket', best
    done after 'salt-run gopbx.drain'. #}
freeswitch-config-reloaded:
  cmd.run:
    - name: fs_cli -x reloadxml && fs_cli -x reloadacl
    - onchanges:
{%- for path in config_files if path != 'autoload_configs/xml_curl.conf.xml' %}
      - file: freeswitch-config-{{ path }}-managed
{%- endfor %}
    - require:
      - service: freeswitch-service-running
      - file: freeswitch-fs-cli-config-managed

freeswitch-xml-curl-reloaded:
  cmd.run:
    - name: fs_cli -x 'reload mod_xml_curl'
    - onchanges:
      - file: freeswitch-config-autoload_configs/xml_curl.conf.xml-managed
    - require:
      - service: freeswitch-service-running
      - file: freeswitch-fs-cli-config-managed
