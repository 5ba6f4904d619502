# Pillar is assigned by minion id only (a minion controls its own grains), and
# only to whole ids of the naming scheme <role>-<location>-<n>: 'fs-syd-1.evil'
# or 'fs-syd-1-x' get nothing.
# Secrets are not here: the ext_pillar gopbx_secrets (_pillar/) hands each minion
# those its roles' formulas declare, from the encrypted secrets file.
base:
  '*':
    - plan
  '^coord-[a-z]+-[0-9]+$':
    - match: pcre
    - roles.coordinator
  '^kam-[a-z]+-[0-9]+$':
    - match: pcre
    - roles.kamailio_standby
  '^pgrep-[a-z]+-[0-9]+$':
    - match: pcre
    - roles.pg_replica
  '^fs-[a-z]+-[0-9]+$':
    - match: pcre
    - roles.freeswitch
  '^[a-z]+-(syd|mel)-[0-9]+$':
    - match: pcre
    - regions.au
    # Addresses of VMs made after the seed: kept beside the tree, never
    # committed. Shape: site/au.sls.example.
    - site.au
  # The labs' own pillar (lab/pillar/, a pillar root only their configurations add).
  '^lab-[a-z]+-[0-9]+$':
    - match: pcre
    - lab
