roles: [freeswitch]
