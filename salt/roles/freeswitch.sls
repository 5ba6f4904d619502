# A FreeSWITCH media node (fs-<region>-<n>): it announces itself when ready.
include:
  - freeswitch
  - freeswitch.ready
