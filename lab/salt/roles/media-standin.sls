# Lab only: SIPp stand-ins in place of FreeSWITCH media nodes (no Debian 12 package).
include:
  - media_standin
