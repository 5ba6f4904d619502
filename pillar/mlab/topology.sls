# The multi-host lab's machines (scripts/mlab): the seed's hosts on a private
# network that exists only inside the lab's network namespaces. The coordinator
# also routes the plan's service network (172.28.0.0/24) for the others.
mlab:
  network: 10.28.0.0/24
  machines:
    coord-syd-1: 10.28.0.2
    kam-mel-1: 10.28.0.3
    pgrep-syd-1: 10.28.0.4
    fs-syd-1: 10.28.0.11
    fs-syd-2: 10.28.0.12
