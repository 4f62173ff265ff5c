#!/bin/sh
# A one-machine Pacemaker walk-through: corosync and Pacemaker (Debian's
# pacemaker, corosync, crmsh) run a Twinbox pair as a promotable clone of
# two instances on this machine (globally-unique, config node%i.toml),
# without fencing. Run as root on a scratch machine or container: it
# writes /etc/corosync/corosync.conf and starts corosync and pacemakerd.
#   sh ops/pacemaker/lab.sh /path/to/twinbox
# Then: crm_mon -1; twinbox status --admin /tmp/twinbox-pcmk/data0/admin.sock;
# kill -9 the active's pid (/run/resource-agents/twinbox-twinbox:0.pid) and
# watch Pacemaker recover (docs/operations.md, "A walk-through").
set -eu
bin=${1:?usage: lab.sh /path/to/twinbox}
dir=/tmp/twinbox-pcmk
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir" /usr/lib/ocf/resource.d/twinbox
install -m 0755 "$here/../ocf/twinbox" /usr/lib/ocf/resource.d/twinbox/twinbox

cat >/etc/corosync/corosync.conf <<CONF
totem {
  version: 2
  cluster_name: twinbox-lab
  transport: knet
  crypto_cipher: none
  crypto_hash: none
}
nodelist {
  node {
    ring0_addr: 127.0.0.1
    name: lab1
    nodeid: 1
  }
}
quorum {
  provider: corosync_votequorum
}
logging {
  to_logfile: yes
  logfile: $dir/corosync.log
  to_stderr: no
}
CONF
corosync -f >"$dir/corosync.out" 2>&1 &
echo $! >"$dir/corosync.pid"
sleep 2
/usr/sbin/pacemakerd >"$dir/pacemakerd.out" 2>&1 &
echo $! >"$dir/pacemakerd.pid"
until crm_mon -1 2>/dev/null | grep -q "Current DC: lab1"; do sleep 1; done

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
p0=$(port)
p1=$(port)
for i in 0 1; do
  if [ $i = 0 ]; then mine=$p0 peer=$p1; else mine=$p1 peer=$p0; fi
  cat >"$dir/node$i.toml" <<CONF
data = "$dir/data$i"
imap_addr = "127.0.0.1:0"
imaps_addr = "127.0.0.1:0"
smtp_addr = "127.0.0.1:0"
smtps_addr = "127.0.0.1:0"
lmtp_addr = "127.0.0.1:0"
metrics_addr = "127.0.0.1:0"
role = "passive"
external = true
node_name = "tb$i"
nats_addr = "127.0.0.1:$mine"
peer_nats = "127.0.0.1:$peer"
link_password = "lab-link-password-123"
link_tls = false
CONF
done

crm configure property stonith-enabled=false no-quorum-policy=ignore
crm configure primitive twinbox ocf:twinbox:twinbox \
  params config="$dir/node%i.toml" binary="$bin" log="$dir/twinbox%i.log" \
  op monitor interval=5s role=Promoted timeout=20s op monitor interval=6s role=Unpromoted timeout=20s \
  op start timeout=60s op promote timeout=60s op demote timeout=60s op stop timeout=60s
crm configure clone twinbox-clone twinbox meta promotable=true globally-unique=true \
  promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=2 notify=true
until crm_mon -1 | grep -q "Promoted lab1"; do sleep 1; done
crm_mon -1
