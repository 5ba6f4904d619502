{#- A database member's role changed (Patroni's callback, gopbx/postgres/role_changed):
    hand the sender's id and the payload to the runner, which asks the cluster
    itself before it repoints pgBouncer. #}
gopbx-postgres-role-changed:
  runner.gopbx_db.role_changed:
    - args:
      - event: {{ {'id': data.get('id'), 'data': data.get('data')} | json }}
