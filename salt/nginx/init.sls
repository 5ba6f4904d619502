{#- Nginx on the coordinator: HTTPS for api.gopbx.au (the API, /grafana/, SSE
    unbuffered), HTTP only for the ACME challenge and a redirect. One nginx.conf,
    checked by `nginx -t` before it replaces the running one. #}
{%- from 'nginx/map.jinja' import nginx with context %}
{%- from 'macros/tls.jinja' import self_signed_certificate %}

nginx-pkg-installed:
  pkg.installed:
    - pkgs: [nginx, openssl{{ ', certbot' if nginx.certificate == 'letsencrypt' else '' }}]

nginx-tls-dir-managed:
  file.directory:
    - name: {{ nginx.tls_dir }}
    - mode: '0755'

nginx-acme-webroot-managed:
  file.directory:
    - name: {{ nginx.acme_webroot }}
    - mode: '0755'

# Nginx reads its key as root before dropping privileges: the key stays root's.
{{ self_signed_certificate('nginx-self-signed-certificate-created', nginx.tls_dir, nginx.server_name,
                           'root', 'file: nginx-tls-dir-managed') }}

# The package's default site listens on every address: ours replaces nginx.conf whole.
nginx-default-site-absent:
  file.absent:
    - name: /etc/nginx/sites-enabled/default

nginx-config-managed:
  file.managed:
    - name: /etc/nginx/nginx.conf
    - source: salt://nginx/files/nginx.conf.jinja
    - template: jinja
    - context:
        nginx: {{ nginx | json }}
        api_port: {{ salt['gopbx_pillar.plain']('api:port', 8080) }}
    - mode: '0644'
    - check_cmd: nginx -q -t -c
    - require:
      - pkg: nginx-pkg-installed
      - x509: nginx-self-signed-certificate-created

nginx-service-running:
  service.running:
    - name: nginx
    - enable: True
    - reload: True
    - require:
      - file: nginx-acme-webroot-managed
    - watch:
      - file: nginx-config-managed
      - file: nginx-default-site-absent
      # A reissued certificate (a changed server_name, a renewal) is served at once.
      - x509: nginx-self-signed-certificate-created

{%- if nginx.certificate == 'letsencrypt' %}

# certbot puts a renewed certificate in place through this hook (first issue and
# every renewal by certbot's own timer) and reloads Nginx.
nginx-certbot-deploy-hook-managed:
  file.managed:
    - name: /etc/letsencrypt/renewal-hooks/deploy/gopbx-nginx
    - mode: '0755'
    - makedirs: True
    - contents: |
        #!/bin/sh
        # Managed by Salt (nginx formula).
        set -e
        install -m 0644 {{ nginx.letsencrypt_dir }}/fullchain.pem {{ nginx.tls_dir }}/cert.pem
        install -m 0640 {{ nginx.letsencrypt_dir }}/privkey.pem {{ nginx.tls_dir }}/key.pem
        nginx -t -q && (systemctl reload nginx || service nginx reload)

nginx-letsencrypt-certificate-obtained:
  cmd.run:
    - name: >-
        certbot certonly --non-interactive --agree-tos --email {{ nginx.acme_email }}
        --webroot --webroot-path {{ nginx.acme_webroot }} --domain {{ nginx.server_name }}
        --deploy-hook /etc/letsencrypt/renewal-hooks/deploy/gopbx-nginx
    - creates: {{ nginx.letsencrypt_dir }}/fullchain.pem
    - require:
      - service: nginx-service-running
      - file: nginx-certbot-deploy-hook-managed
{%- endif %}
