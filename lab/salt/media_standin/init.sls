{#- Lab only: SIPp STAND-INS for FreeSWITCH media nodes (which have no Debian 12
    package), answering calls and echoing RTP, as the lab's dispatcher set. #}
{%- from 'media_standin/map.jinja' import media_standin with context %}

media-standin-pkg-installed:
  pkg.installed:
    - name: sip-tester

media-standin-scenario-managed:
  file.managed:
    - name: /usr/share/gopbx/media-standin/uas.xml
    - source: salt://media_standin/files/uas.xml
    - makedirs: True
    - mode: '0644'

media-standin-init-managed:
  file.managed:
    - name: /etc/init.d/gopbx-media-standin
    - source: salt://media_standin/files/init.jinja
    - template: jinja
    - context:
        media_standin: {{ media_standin | json }}
    - mode: '0755'

{#- Under systemd the init script becomes a unit once the generators run again. #}
media-standin-systemd-reloaded:
  cmd.run:
    - name: systemctl daemon-reload
    - onlyif: test -d /run/systemd/system
    - onchanges:
      - file: media-standin-init-managed

media-standin-service-running:
  service.running:
    - name: gopbx-media-standin
    - enable: True
    - require:
      - pkg: media-standin-pkg-installed
      - cmd: media-standin-systemd-reloaded
    - watch:
      - file: media-standin-scenario-managed
      - file: media-standin-init-managed

{#- The stand-ins as the lab's dispatcher set, where the database and Kamailio are
    on this host (the single-host lab); the multi-host lab's stand-ins only answer. #}
{%- if media_standin.dispatcher %}

media-standin-dispatcher-set-present:
  gopbx_db.dispatcher_set:
    - name: '{{ media_standin.setid }}'
    - destinations: {{ media_standin.addresses | map('regex_replace', '^', 'sip:') | list | json }}
    - description: lab media stand-ins
    - region: lab

media-standin-dispatcher-reloaded:
  cmd.run:
    - name: kamcmd dispatcher.reload
    - onchanges:
      - gopbx_db: media-standin-dispatcher-set-present
{%- endif %}
