{#- The control-plane API (api/ in this tree) in its own venv, as a service on its
    plan address. Pillar holds the admin's password hash, never the password.
    The code reaches the master's file server through two links in files/
    (gopbx_api -> api/gopbx_api, requirements.txt -> api/requirements.txt): the
    tree's root is not served, so the API's tests and tools stay off every host. #}
{%- from 'api/map.jinja' import api with context %}
{%- set home = api.home %}

api-build-deps-pkg-installed:
  pkg.installed:
    - pkgs: [python3-venv, python3-dev, gcc, libpq-dev]

api-user-present:
  user.present:
    - name: gopbx-api
    - system: True
    - home: {{ home }}
    - shell: /usr/sbin/nologin
    - createhome: False

api-code-managed:
  file.recurse:
    - name: {{ home }}/app/gopbx_api
    - source: salt://api/files/gopbx_api
    - clean: True
    - file_mode: '0644'
    - dir_mode: '0755'
    - exclude_pat: E@__pycache__

api-requirements-managed:
  file.managed:
    - name: {{ home }}/requirements.txt
    - source: salt://api/files/requirements.txt
    - mode: '0644'
    - makedirs: True

api-venv-created:
  cmd.run:
    - name: /usr/bin/python3 -m venv {{ home }}/venv
    - creates: {{ home }}/venv/bin/python
    - require:
      - pkg: api-build-deps-pkg-installed

# A stamp of the requirements' hash, written after a successful install: a failed
# install is retried on the next run, an unchanged one is not redone.
api-requirements-installed:
  cmd.run:
    - name: >-
        {{ home }}/venv/bin/pip install --quiet --disable-pip-version-check {{ api.pip_options }}
        -r {{ home }}/requirements.txt
        && sha256sum {{ home }}/requirements.txt > {{ home }}/venv/requirements.sha256
    - unless: sha256sum --status -c {{ home }}/venv/requirements.sha256
    - require:
      - cmd: api-venv-created
      - file: api-requirements-managed

api-settings-managed:
  file.managed:
    - name: /etc/gopbx/api.json
    - source: salt://api/files/api.json.jinja
    - template: jinja
    - context:
        api: {{ api | json }}
        previous_keys: {{ api.secrets.get('previous_jwt_keys', []) | json }}
    - user: root
    - group: gopbx-api
    - mode: '0640'
    - makedirs: True
    - show_changes: False
    - require:
      - user: api-user-present

{%- for name, service in api.services | dictsort %}
{%- set context = dict(service, name=name, home=home) %}

{{ name }}-systemd-unit-managed:
  file.managed:
    - name: /etc/systemd/system/{{ name }}.service
    - source: salt://api/files/service.unit.jinja
    - template: jinja
    - context: {{ context | json }}
    - mode: '0644'

{{ name }}-systemd-reloaded:
  cmd.run:
    - name: systemctl daemon-reload
    - onlyif: test -d /run/systemd/system
    - onchanges:
      - file: {{ name }}-systemd-unit-managed

{{ name }}-init-script-managed:
  file.managed:
    - name: /etc/init.d/{{ name }}
    - source: salt://api/files/service.init.jinja
    - template: jinja
    - context: {{ context | json }}
    - mode: '0755'

{{ name }}-service-running:
  service.running:
    - name: {{ name }}
    - enable: True
    - require:
      - cmd: api-requirements-installed
      - cmd: {{ name }}-systemd-reloaded
    - watch:
      - file: api-code-managed
      - file: api-settings-managed
      - file: {{ name }}-init-script-managed
      - file: {{ name }}-systemd-unit-managed
{%- endfor %}
