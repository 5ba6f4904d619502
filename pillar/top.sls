# Pillar is assigned by minion id only (a minion controls its own grains).
base:
  '*':
    - plan
  'coord-*':
    - roles.coordinator
  'kam-*':
    - roles.kamailio_standby
  'pgrep-*':
    - roles.pg_replica
  'fs-*':
    - roles.freeswitch
  '*-syd-* or *-mel-*':
    - match: compound
    - regions.au
    # Deployment secrets and addresses: GPG-encrypted, kept beside the tree, never
    # committed. Shape: site/au.sls.example.
    - site.au
  'lab-*':
    - lab
    # Throwaway lab secrets, made by the lab command under .lab/ (git-ignored).
    - site.lab
