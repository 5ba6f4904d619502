roles: [kamailio-standby]
