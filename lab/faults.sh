#!/usr/bin/env bash
# The lab's own faults, as an operator would cause them, each checked:
#   1. `docker network disconnect` of the passive for 10 s under SMTP load
#      on the active, then reconnect;
#   2. `docker kill` of the active under SMTP load.
# After each, both nodes must serve again without an operator (the fenced
# node is powered on again: fence_action = reboot), and every message
# acknowledged with 250 must be in alice's INBOX on both nodes, once.
# Start the lab first (lab/run.sh -d); needs swaks, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

# The nodes' admin APIs over TCP, with the lab's token (lab/run.sh).
# Ports as docker-compose.yml publishes them (TWINBOX_LAB_A/B, for a
# second lab on the host); containers by service, whatever their names.
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-twinbox}"
LA=${TWINBOX_LAB_A:-1} LB=${TWINBOX_LAB_B:-2}
A=127.0.0.1:${LA}8411 B=127.0.0.1:${LB}8411
AUTH="Authorization: Bearer $(cat lab/admin.token)"
SMTP_A=127.0.0.1:${LA}2525 SMTP_B=127.0.0.1:${LB}2525
IMAP_A=127.0.0.1:${LA}1143 IMAP_B=127.0.0.1:${LB}1143
PASSWORD=lab-pw

field() { # admin-address python-expression-on-s
  curl -s --max-time 5 -H "$AUTH" "http://$1/status" | python3 -c "import json,sys; s=json.load(sys.stdin); print($2)" 2>/dev/null || echo "?"
}
wait_for() { # what seconds command...
  local what=$1 n=$2; shift 2
  for _ in $(seq 1 "$n"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "FAIL: no $what within ${n}s" >&2
  return 1
}
both_serving() {
  [ "$(field $A 's["serving"]')" = True ] && [ "$(field $B 's["serving"]')" = True ] &&
    { [ "$(field $A 's["role"]')" = active ] || [ "$(field $B 's["role"]')" = active ]; } &&
    [ "$(field $A 's["failover"]["peer"]')" != dead ] && [ "$(field $B 's["failover"]["peer"]')" != dead ]
}
active_smtp() {
  if [ "$(field $A 's["role"]')" = active ]; then echo $SMTP_A; else echo $SMTP_B; fi
}

ACKED=$(mktemp)
trap 'rm -f "$ACKED"; kill $(jobs -p) 2>/dev/null || true' EXIT
load() { # tag: deliver to whichever node is active until killed; record 250s
  local i=0
  while :; do
    i=$((i + 1))
    local id="$1-$i-$RANDOM@lab"
    if swaks --server "$(active_smtp)" --to alice@localhost --header "Message-Id: <$id>" \
      --timeout 15 2>&1 | grep -q "OK: queued"; then
      echo "$id" >>"$ACKED"
    fi
  done
}

check() { # every acknowledged Message-ID once in alice's INBOX on both nodes
  for imap in $IMAP_A $IMAP_B; do
    python3 - "$imap" "$PASSWORD" "$ACKED" <<'EOF'
import imaplib, sys, collections
host, port = sys.argv[1].split(":")
want = [l.strip() for l in open(sys.argv[3]) if l.strip()]
c = imaplib.IMAP4(host, int(port)); c.login("alice", sys.argv[2]); c.select("INBOX", readonly=True)
typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
seen = collections.Counter()
for part in data:
    if isinstance(part, tuple):
        v = part[1].decode().split(":", 1)[-1].strip().strip("<>")
        seen[v] += 1
missing = [w for w in want if seen[w] == 0]
twice = [w for w in want if seen[w] > 1]
print(f"{sys.argv[1]}: {len(want)} acknowledged, {len(missing)} missing, {len(twice)} stored twice")
sys.exit(1 if missing or twice else 0)
EOF
  done
}

echo "== setup"
wait_for "an active node" 60 sh -c "[ \"\$(curl -s -H '$AUTH' http://$A/status | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"role\"])')\" = active ]"
for n in a b; do echo "$PASSWORD" | docker-compose exec -T $n /twinbox user add alice >/dev/null 2>&1 ||
  echo "$PASSWORD" | docker-compose exec -T $n /twinbox user passwd alice >/dev/null; done
wait_for "both nodes serving" 60 both_serving

echo "== 1. the passive's network cut for 10 s under load"
passive=$(docker-compose ps -q b)
[ "$(field $B 's["role"]')" = passive ] || passive=$(docker-compose ps -q a)
net=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' $passive)
load cut & LOAD=$!
sleep 3
docker network disconnect "$net" $passive
sleep 10
docker network connect "$net" $passive
wait_for "both nodes serving after the cut" 120 both_serving
kill $LOAD; wait $LOAD 2>/dev/null || true
wait_for "identical stores" 60 sh -c "[ \"\$(curl -s -H '$AUTH' http://$A/digest | head -c 120)\" = \"\$(curl -s -H '$AUTH' http://$B/digest | head -c 120)\" ]"
check

echo "== 2. docker kill of the active under load"
active=$(docker-compose ps -q a)
[ "$(field $A 's["role"]')" = active ] || active=$(docker-compose ps -q b)
load kill & LOAD=$!
sleep 3
docker kill $active >/dev/null
wait_for "both nodes serving after the kill" 120 both_serving
sleep 3
kill $LOAD; wait $LOAD 2>/dev/null || true
wait_for "identical stores" 60 sh -c "[ \"\$(curl -s -H '$AUTH' http://$A/digest | head -c 120)\" = \"\$(curl -s -H '$AUTH' http://$B/digest | head -c 120)\" ]"
check
echo "== both faults survived: $(wc -l <"$ACKED") messages acknowledged, none missing, none twice"
