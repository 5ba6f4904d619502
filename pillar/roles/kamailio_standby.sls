roles: [kamailio-standby]
# The standby runs its own RTPEngine and Kamailio at their plan addresses; the
# rest of the plan (database, Redis, ...) stays on the coordinator, over the mesh.
network:
  internal:
    local_services: [rtpengine_ng, kamailio]
