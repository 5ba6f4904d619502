{#- A DOUBLE of the freeswitch formula, for the master/minion tests only. FreeSWITCH
    has no Debian 12 package, so nothing here can install or run it: this stands in
    for "the freeswitch formula applied", so that the real freeswitch.ready state
    (which requires it) can be exercised. The real formula's files are checked by
    tests/render. Pillar freeswitch_double:fails makes it fail, as a broken run would. #}
{%- if salt['pillar.get']('freeswitch_double:fails') %}
freeswitch-double-applied:
  test.fail_without_changes:
    - name: the FreeSWITCH double fails, as asked
{%- else %}
freeswitch-double-applied:
  test.succeed_without_changes:
    - name: the FreeSWITCH double stands in for the freeswitch formula
{%- endif %}
