{#- A provisioning request from the API, through the webhook engine: hand its body
    (JSON naming a request id) to the runner, which trusts none of it and acts only
    on a request recorded as pending. #}
{%- set body = data.get('body', '') %}
{%- if body is not string %}{% set body = body.decode('utf-8', 'replace') %}{% endif %}
gopbx-provision-vm:
  runner.gopbx.provision:
    - args:
      - request: {{ body | json }}
