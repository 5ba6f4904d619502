{#- etcd on the region's mesh: the store Patroni keeps the database's leader lock
    in. A member waits for a quorum before it answers; the highstate need not. #}
{%- from 'etcd/map.jinja' import etcd with context %}
{%- if grains['id'] in etcd.members %}
{%-   set mesh = salt['gopbx_pillar.plain']('wireguard:hosts') %}
{%-   set members = {} %}
{%-   for name in etcd.members %}{%- do members.update({name: mesh[name].address}) %}{%- endfor %}

etcd-pkg-installed:
  pkg.installed:
    - pkgs:
      - etcd-server
      - etcd-client

etcd-config-managed:
  file.managed:
    - name: /etc/default/etcd
    - source: salt://etcd/files/etcd.default.jinja
    - template: jinja
    - context:
        etcd: {{ etcd | json }}
        minion_id: {{ grains['id'] }}
        me: {{ members[grains['id']] }}
        members: {{ members | json }}
    - mode: '0644'
    - require:
      - pkg: etcd-pkg-installed

{#- Debian's unit is Type=notify: the first member of a new cluster would hold
    its highstate until a second one starts. Type=exec returns once etcd runs;
    Restart=always brings a member back after any exit, not only a crash. #}
etcd-unit-managed:
  file.managed:
    - name: /etc/systemd/system/etcd.service.d/gopbx.conf
    - contents: |
        # Managed by Salt (etcd formula).
        [Service]
        Type=exec
        Restart=always
        RestartSec=2
    - mode: '0644'
    - makedirs: True

etcd-units-reloaded:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: etcd-unit-managed

etcd-service-running:
  service.running:
    - name: etcd
    - enable: True
    - require:
      - cmd: etcd-units-reloaded
    - watch:
      - file: etcd-config-managed
      - file: etcd-unit-managed
{%- endif %}
