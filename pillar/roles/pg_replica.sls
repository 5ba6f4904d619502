roles: [pg-replica]
