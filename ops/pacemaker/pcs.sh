#!/bin/sh
# Pacemaker configuration for a Twinbox pair with pcs (RHEL, Debian's
# pcs package). Nodes: mail-a and mail-b. Resources:
#   - twinbox-clone: ocf:twinbox:twinbox as a promotable clone (the active
#     is the promoted instance; /etc/twinbox/twinbox.toml sets
#     external = true and role = "passive" on both nodes);
#   - sysvol-drbd-clone: DRBD resource "sysvol" (drbd/sysvol.res), the
#     system volume (passwd-file, TLS certificates), promoted with the active;
#   - sysvol-fs: its filesystem on /srv/twinbox-system;
#   - mail-ip: the service IP clients use (IPaddr2 sends gratuitous ARP);
#   - fencing with a real fence agent (IPMI here).
# Run once, on one node, after `pcs cluster setup`. Read it first: the
# addresses and credentials are examples.
set -eu

pcs cluster cib twinbox.xml

# STONITH: each node's IPMI board, never used to fence itself.
pcs -f twinbox.xml stonith create fence-mail-a fence_ipmilan \
  ip=10.0.0.101 username=admin password=secret lanplus=1 pcmk_host_list=mail-a
pcs -f twinbox.xml stonith create fence-mail-b fence_ipmilan \
  ip=10.0.0.102 username=admin password=secret lanplus=1 pcmk_host_list=mail-b
pcs -f twinbox.xml constraint location fence-mail-a avoids mail-a
pcs -f twinbox.xml constraint location fence-mail-b avoids mail-b
pcs -f twinbox.xml property set stonith-enabled=true stonith-timeout=60s

# The system volume.
pcs -f twinbox.xml resource create sysvol-drbd ocf:linbit:drbd drbd_resource=sysvol \
  op monitor interval=29s role=Promoted op monitor interval=31s role=Unpromoted \
  promotable promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true
pcs -f twinbox.xml resource create sysvol-fs ocf:heartbeat:Filesystem \
  device=/dev/drbd0 directory=/srv/twinbox-system fstype=ext4

# Twinbox: both nodes run it; Pacemaker promotes one.
pcs -f twinbox.xml resource create twinbox ocf:twinbox:twinbox \
  config=/etc/twinbox/twinbox.toml log=/var/log/twinbox.log \
  op monitor interval=10s role=Promoted timeout=20s op monitor interval=11s role=Unpromoted timeout=20s \
  op start timeout=120s op stop timeout=60s op promote timeout=60s op demote timeout=60s \
  promotable promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1 notify=true

# The service IP, with gratuitous ARP on takeover.
pcs -f twinbox.xml resource create mail-ip ocf:heartbeat:IPaddr2 ip=10.0.0.10 cidr_netmask=24 \
  op monitor interval=10s

# The active Twinbox, the DRBD primary, the mounted volume and the IP go together.
pcs -f twinbox.xml constraint colocation add Promoted sysvol-drbd-clone with Promoted twinbox-clone INFINITY
pcs -f twinbox.xml constraint colocation add sysvol-fs with Promoted sysvol-drbd-clone INFINITY
pcs -f twinbox.xml constraint colocation add mail-ip with Promoted twinbox-clone INFINITY
pcs -f twinbox.xml constraint order promote sysvol-drbd-clone then start sysvol-fs
pcs -f twinbox.xml constraint order start sysvol-fs then promote twinbox-clone
pcs -f twinbox.xml constraint order promote twinbox-clone then start mail-ip

pcs cluster cib-push twinbox.xml --config
