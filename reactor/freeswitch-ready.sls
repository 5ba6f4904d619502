{#- A media node's first successful highstate: hand the whole event to the runner,
    which trusts none of it. Thin on purpose: reactor SLS run in the master's
    event loop and should not do the work themselves. #}
gopbx-register-freeswitch-node:
  runner.gopbx.register:
    - args:
      - event: {{ data | json }}
