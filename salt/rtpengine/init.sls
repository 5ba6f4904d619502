{#- RTPEngine: media relay for NAT traversal, controlled by Kamailio over ng. #}
{%- from 'rtpengine/map.jinja' import rtpengine with context %}

rtpengine-pkg-installed:
  pkg.installed:
    - pkgs:
      - rtpengine-daemon
{%- if rtpengine.kernel_forwarding %}
      - rtpengine-kernel-dkms
{%- endif %}

rtpengine-config-managed:
  file.managed:
    - name: /etc/rtpengine/rtpengine.conf
    - source: salt://rtpengine/files/rtpengine.conf.jinja
    - template: jinja
    - context:
        rtpengine: {{ rtpengine | json }}
    - mode: '0644'
    - require:
      - pkg: rtpengine-pkg-installed

rtpengine-service-running:
  service.running:
    - name: rtpengine-daemon
    - enable: True
    - watch:
      - file: rtpengine-config-managed
