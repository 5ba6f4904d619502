{#- An edge host's Keepalived transition (gopbx/keepalived/<state>): hand the
    sender's id, the tag and the payload to the runner, which believes none of it
    until the host itself confirms its state. #}
gopbx-edge-transition:
  runner.gopbx_edge.transition:
    - args:
      - event: {{ {'id': data.get('id'), 'tag': tag, 'data': data.get('data')} | json }}
