#!/usr/bin/env bash
# bench-dovecot.sh — the same loads, one after the other, against a private
# Dovecot 2.3 (Debian's dovecot-imapd and dovecot-lmtpd) and a private
# Twinbox on this machine, and a Markdown table of the numbers side by side
# (for docs/benchmarks.md).
#
# Usage: scripts/bench-dovecot.sh [both|dovecot|twinbox]
#
# Loads (each `twinbox bench`, SESSIONS concurrent sessions, DURATION each):
#   1. LMTP, SIZE-byte messages, 50 recipients (user1..user50), on an empty
#      server; disk bytes measured before and after.
#   2. LMTP, SIZE-byte messages, 1 recipient.
#   3. IMAP FETCH/SEARCH/APPEND mix as reader1..readerSESSIONS, after
#      preloading each reader's INBOX to PRELOAD messages.
#
# Settings (environment): DURATION (20s), SESSIONS (16), SIZE (10240),
# PRELOAD (500), MIX (fetch=4,headers=3,search=2,append=1), PASSWORD,
# STARTUP_TIMEOUT in seconds (60), KEEP=1 keeps the work directory,
# TWINBOX_BIN (default: built from ./cmd/twinbox).
#
# Needs root to install the Debian packages when they are missing; runs
# as root or as a normal user. Nothing listens beyond 127.0.0.1; the system
# Dovecot service is never enabled.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

WHICH=${1:-both}
case "$WHICH" in
  both | dovecot | twinbox) ;;
  -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
  *) echo "usage: $0 [both|dovecot|twinbox]" >&2; exit 2 ;;
esac

DURATION=${DURATION:-20s}
SESSIONS=${SESSIONS:-16}
SIZE=${SIZE:-10240}
PRELOAD=${PRELOAD:-500}
MIX=${MIX:-fetch=4,headers=3,search=2,append=1}
PASSWORD=${PASSWORD:-bench-secret-7}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}
KEEP=${KEEP:-0}
USERS=50          # user1..user50 receive LMTP mail
READERS=$SESSIONS # reader1..readerN are read over IMAP, one per session

WORK=$(mktemp -d /tmp/twinbox-bench.XXXXXX)
chmod 755 "$WORK" # Dovecot's unprivileged processes walk through it
OUT=$WORK/results
mkdir -p "$OUT"
DOVECOT_PID=
TWINBOX_PID=
BENCH_PID=
POLICY_RC_CREATED=

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
  local status=$?
  set +e
  for pid in $BENCH_PID $DOVECOT_PID $TWINBOX_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
    fi
  done
  [ -n "$POLICY_RC_CREATED" ] && rm -f /usr/sbin/policy-rc.d
  if [ "$KEEP" = 1 ] || [ "$status" != 0 ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() { command -v "$1" >/dev/null || die "$1 is needed (apt-get install -y $2)"; }

# pick_port prints a free TCP port on 127.0.0.1, never one handed out before.
PICKED=" "
pick_port() {
  local p
  for _ in $(seq 100); do
    if command -v python3 >/dev/null; then
      p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    else
      p=$((20000 + RANDOM % 40000))
    fi
    case "$PICKED" in *" $p "*) continue ;; esac
    if [ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ]; then
      PICKED="$PICKED$p "
      echo "$p"
      return
    fi
  done
  die "no free port found"
}

# wait_greeting NAME PID PORT PREFIX: polls until the server on PORT greets
# with a line starting with PREFIX, at most STARTUP_TIMEOUT seconds.
wait_greeting() {
  local name=$1 pid=$2 port=$3 prefix=$4 line deadline=$((SECONDS + STARTUP_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    # A subshell, so neither the descriptor nor a refused connect's
    # message outlives the probe.
    line=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && IFS= read -r -t 2 l <&3 && printf '%s' "$l") 2>/dev/null || true)
    case "$line" in "$prefix"*) return 0 ;; esac
    sleep 0.2
  done
  log "$name did not greet on 127.0.0.1:$port within ${STARTUP_TIMEOUT}s"
  return 1
}

# wait_http NAME PID URL: polls until URL answers 200.
wait_http() {
  local name=$1 pid=$2 url=$3 deadline=$((SECONDS + STARTUP_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  log "$name did not answer $url within ${STARTUP_TIMEOUT}s"
  return 1
}

du_bytes() { du -sb "$1" | cut -f1; }

build_twinbox() {
  if [ -n "${TWINBOX_BIN:-}" ]; then
    BIN=$TWINBOX_BIN
  else
    log "building twinbox"
    go build -o "$WORK/twinbox" ./cmd/twinbox
    BIN=$WORK/twinbox
  fi
}

# bench NAME KIND ARGS...: runs one load, keeps its JSON in $OUT/NAME-KIND.json
# and shows the human table on stderr.
bench() {
  local name=$1 label=$2 kind=$3
  shift 3
  log "$name: bench $kind $*"
  # In the background and waited for, so a signal reaches the trap at once
  # rather than after the run.
  "$BIN" bench "$kind" --json "$@" >"$OUT/$name-$label.json" &
  BENCH_PID=$!
  wait "$BENCH_PID"
  BENCH_PID=
  jq -r 'if .protocol then
      "  \(.delivered) delivered, \(.failed) failed, \(.messages_per_s|floor) msg/s, \(.recipients_per_s|floor) rcpt/s, p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms"
    else
      (.ops + [.total])[] | "  \(.name): \(.count) ok, \(.failed) failed, \(.ops_per_s|floor)/s, p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms"
    end' "$OUT/$name-$label.json" >&2
}

# run_loads NAME IMAP_ADDR LMTP_ADDR DISK_DIR: the three loads against one
# server, started empty. DISK_DIR is what du measures.
run_loads() {
  local name=$1 imap=$2 lmtp=$3 disk=$4
  du_bytes "$disk" >"$OUT/$name-disk-before"
  bench "$name" lmtp50 lmtp --target "$lmtp" --sessions "$SESSIONS" --size "$SIZE" \
    --rcpts 50 --users "$USERS" --duration "$DURATION"
  sync
  du_bytes "$disk" >"$OUT/$name-disk-after"
  if [ "$name" = twinbox ]; then
    # The store's data files (sstables, blob files) and its write-ahead
    # log, apart: the log holds recent deliveries until a memtable flush,
    # and Pebble keeps obsolete logs for recycling.
    find "$disk/store" -type f \( -name '*.sst' -o -name '*.blob' \) -printf '%s\n' |
      awk '{n += $1} END {print n + 0}' >"$OUT/twinbox-store-data"
    find "$disk/store" -type f -name '*.log' -printf '%s\n' |
      awk '{n += $1} END {print n + 0}' >"$OUT/twinbox-store-wal"
  fi
  bench "$name" lmtp1 lmtp --target "$lmtp" --sessions "$SESSIONS" --size "$SIZE" \
    --rcpts 1 --users "$USERS" --duration "$DURATION"
  bench "$name" imap imap --target "$imap" --sessions "$SESSIONS" --size "$SIZE" \
    --user-prefix reader --users "$READERS" --password "$PASSWORD" \
    --preload "$PRELOAD" --mix "$MIX" --duration "$DURATION"
}

# ---------------------------------------------------------------- Dovecot

install_dovecot() {
  if dpkg -s dovecot-imapd dovecot-lmtpd >/dev/null 2>&1 && [ -x /usr/sbin/dovecot ]; then
    return
  fi
  [ "$(id -u)" = 0 ] || die "dovecot-imapd and dovecot-lmtpd are missing; install them as root (apt-get install -y dovecot-imapd dovecot-lmtpd)"
  log "installing dovecot-imapd dovecot-lmtpd"
  # Keep the package from starting the system service: invoke-rc.d asks
  # policy-rc.d, and 101 means "not now".
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q dovecot-imapd dovecot-lmtpd >"$WORK/apt.log" 2>&1 ||
    { apt-get update -q >>"$WORK/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q dovecot-imapd dovecot-lmtpd >>"$WORK/apt.log" 2>&1; } ||
    die "apt-get install failed, see $WORK/apt.log"
  if [ -n "$POLICY_RC_CREATED" ]; then
    rm -f /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=
  fi
  stop_system_dovecot
}

# stop_system_dovecot stops and disables the system service if the package
# started it anyway; the private instance below is all this script wants.
stop_system_dovecot() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
  fi
  if [ -s /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
    log "stopping the system dovecot the package started"
    invoke-rc.d dovecot stop >/dev/null 2>&1 || kill "$(cat /run/dovecot/master.pid)"
  fi
}

start_dovecot() {
  install_dovecot
  D=$WORK/dovecot
  mkdir -p "$D/run" "$D/state" "$D/mail"
  DOVECOT_IMAP=127.0.0.1:$(pick_port)
  DOVECOT_LMTP=127.0.0.1:$(pick_port)

  local users_conf
  if [ "$(id -u)" = 0 ]; then
    # Root starts the master; login and internal processes use the
    # package's dovenull and dovecot users; mail is owned by nobody.
    chown nobody:nogroup "$D/mail"
    users_conf="mail_uid = nobody
mail_gid = nogroup"
  else
    # Rootless: every process runs as the current user, no chroots.
    local me grp
    me=$(id -un)
    grp=$(id -gn)
    users_conf="mail_uid = $me
mail_gid = $grp
default_internal_user = $me
default_internal_group = $grp
default_login_user = $me
first_valid_uid = $(id -u)
first_valid_gid = $(id -g)
service anvil {
  chroot =
}
service imap-login {
  chroot =
}"
  fi

  : >"$D/passwd"
  for i in $(seq "$USERS"); do echo "user$i:{PLAIN}$PASSWORD::::::" >>"$D/passwd"; done
  for i in $(seq "$READERS"); do echo "reader$i:{PLAIN}$PASSWORD::::::" >>"$D/passwd"; done
  chmod 644 "$D/passwd"

  cat >"$D/dovecot.conf" <<EOF
# Private Dovecot for scripts/bench-dovecot.sh; nothing from /etc/dovecot.
protocols = imap lmtp
listen = 127.0.0.1
base_dir = $D/run
state_dir = $D/state
log_path = $D/dovecot.log
info_log_path = $D/dovecot.log
ssl = no
auth_mechanisms = plain
disable_plaintext_auth = no
# user1@localhost over LMTP and user1 over IMAP are the same user.
auth_username_format = %Ln
mail_location = maildir:~/Maildir
# The default, said out loud: fsync on commit of each saved message.
mail_fsync = optimized
$users_conf
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $D/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%n $D/passwd
  default_fields = home=$D/mail/%n
}
protocol imap {
  # The bench may open every session as one user from one address.
  mail_max_userip_connections = 1000
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${DOVECOT_IMAP##*:}
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${DOVECOT_LMTP##*:}
  }
  unix_listener lmtp {
    mode = 0600
  }
}
EOF
  dovecot -c "$D/dovecot.conf" -n >"$D/effective.conf" 2>"$D/config-check.log" ||
    die "dovecot rejects its config: $(cat "$D/config-check.log")"
  log "starting dovecot $(dovecot --version | cut -d' ' -f1): imap $DOVECOT_IMAP, lmtp $DOVECOT_LMTP, in $D"
  dovecot -F -c "$D/dovecot.conf" >"$D/stdout.log" 2>&1 &
  DOVECOT_PID=$!
  if ! wait_greeting dovecot "$DOVECOT_PID" "${DOVECOT_IMAP##*:}" "* OK" ||
    ! wait_greeting dovecot "$DOVECOT_PID" "${DOVECOT_LMTP##*:}" "220"; then
    tail -n 20 "$D/stdout.log" "$D/dovecot.log" >&2 2>/dev/null || true
    die "dovecot did not come up"
  fi
}

stop_dovecot() {
  kill -TERM "$DOVECOT_PID" 2>/dev/null || true
  wait "$DOVECOT_PID" 2>/dev/null || true
  DOVECOT_PID=
  if grep -qiE 'error|fatal|panic' "$D/dovecot.log" 2>/dev/null; then
    log "dovecot logged errors (first 5):"
    grep -iE 'error|fatal|panic' "$D/dovecot.log" | head -n 5 >&2
  fi
}

# ---------------------------------------------------------------- Twinbox

start_twinbox() {
  T=$WORK/twinbox-data
  mkdir -p "$T"
  TWINBOX_IMAP=127.0.0.1:$(pick_port)
  TWINBOX_SMTP=127.0.0.1:$(pick_port)
  TWINBOX_LMTP=127.0.0.1:$(pick_port)
  TWINBOX_METRICS=127.0.0.1:$(pick_port)
  log "adding $USERS + $READERS users to twinbox"
  for i in $(seq "$USERS"); do printf '%s\n' "$PASSWORD" | "$BIN" user add "user$i" --data "$T" >/dev/null; done
  for i in $(seq "$READERS"); do printf '%s\n' "$PASSWORD" | "$BIN" user add "reader$i" --data "$T" >/dev/null; done
  log "starting twinbox: imap $TWINBOX_IMAP, lmtp $TWINBOX_LMTP, metrics $TWINBOX_METRICS, in $T"
  "$BIN" serve --data "$T" --imap-addr "$TWINBOX_IMAP" --smtp-addr "$TWINBOX_SMTP" \
    --lmtp-addr "$TWINBOX_LMTP" --metrics-addr "$TWINBOX_METRICS" \
    --imaps-addr "" --smtps-addr "" >"$WORK/twinbox.log" 2>&1 &
  TWINBOX_PID=$!
  if ! wait_http twinbox "$TWINBOX_PID" "http://$TWINBOX_METRICS/healthz"; then
    tail -n 20 "$WORK/twinbox.log" >&2 || true
    die "twinbox did not come up"
  fi
  # A user added just now is picked up within about a second; wait until
  # the last one can log in rather than guessing.
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  until "$BIN" bench imap --target "$TWINBOX_IMAP" --user "reader$READERS" --password "$PASSWORD" \
    --mix append=1 --append-mailbox bench-probe --count 1 --sessions 1 >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "twinbox does not accept reader$READERS's login"
    sleep 0.2
  done
}

stop_twinbox() {
  kill -TERM "$TWINBOX_PID" 2>/dev/null || true
  wait "$TWINBOX_PID" 2>/dev/null || true
  TWINBOX_PID=
}

# ---------------------------------------------------------------- report

# j NAME LABEL FILTER: a number from a result, "–" when absent.
j() {
  local f=$OUT/$1-$2.json v=
  [ -s "$f" ] && v=$(jq -r "$3" "$f")
  [ -n "$v" ] && [ "$v" != null ] && echo "$v" || echo "–"
}

# fmt_int 1234567.8: "1 234 568"; "–" stays.
fmt_int() {
  awk -v v="$1" 'BEGIN {
    if (v == "–" || v == "") { print "–"; exit }
    s = sprintf("%.0f", v); out = ""
    while (length(s) > 3) { out = " " substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    print s out
  }'
}

# ratio A B: B/A to two decimals, "–" when either is missing or A is 0.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "–" || b == "–" || a + 0 == 0) print "–"; else printf "%.2f×\n", b / a
  }'
}

report() {
  local servers=() s
  [ "$WHICH" != twinbox ] && servers+=(dovecot)
  [ "$WHICH" != dovecot ] && servers+=(twinbox)

  local head="| |" sep="| --- |"
  for s in "${servers[@]}"; do
    case $s in
      dovecot) head+=" Dovecot $DOVECOT_VERSION (maildir) |" ;;
      twinbox) head+=" Twinbox ($TWINBOX_VERSION) |" ;;
    esac
    sep+=" ---: |"
  done
  if [ ${#servers[@]} = 2 ]; then head+=" Twinbox / Dovecot |"; sep+=" ---: |"; fi

  row() { # row LABEL VALUE... [RATIO]
    local line="| $1 |"
    shift
    for v in "$@"; do line+=" $v |"; done
    echo "$line"
  }
  rate_row() { # rate_row LABEL LABELFILE FILTER [noratio]
    local vals=() raw=() s v
    for s in "${servers[@]}"; do
      v=$(j "$s" "$2" "$3")
      raw+=("$v")
      vals+=("$(fmt_int "$v")")
    done
    if [ ${#servers[@]} = 2 ]; then
      if [ "${4:-}" = noratio ]; then vals+=(""); else vals+=("$(ratio "${raw[0]}" "${raw[1]}")"); fi
    fi
    row "$1" "${vals[@]}"
  }
  lat_row() { # lat_row LABEL LABELFILE PATH (a latency object)
    local vals=() s
    for s in "${servers[@]}"; do
      vals+=("$(j "$s" "$2" "$3 | \"\(.p50_ms * 10 | round / 10) / \(.p99_ms * 10 | round / 10)\"")")
    done
    if [ ${#servers[@]} = 2 ]; then vals+=(""); fi
    row "$1" "${vals[@]}"
  }
  file_row() { # file_row LABEL FILE-SUFFIX [ratio]: a number per server, blank where absent
    local vals=() raw=() s v
    for s in "${servers[@]}"; do
      v=$(cat "$OUT/$s-$2" 2>/dev/null || echo "–")
      raw+=("$v")
      if [ "$v" = "–" ]; then vals+=(""); else vals+=("$(fmt_int "$v")"); fi
    done
    if [ ${#servers[@]} = 2 ]; then
      if [ "${3:-}" = ratio ]; then vals+=("$(ratio "${raw[0]}" "${raw[1]}")"); else vals+=(""); fi
    fi
    row "$1" "${vals[@]}"
  }

  for s in "${servers[@]}"; do
    local before after n
    before=$(cat "$OUT/$s-disk-before")
    after=$(cat "$OUT/$s-disk-after")
    n=$(j "$s" lmtp50 '.delivered')
    if [ "$n" -gt 0 ]; then
      echo $(((after - before) / n)) >"$OUT/$s-disk-per-msg"
      if [ "$s" = twinbox ]; then
        echo $(($(cat "$OUT/twinbox-store-data") / n)) >"$OUT/twinbox-store-data-per-msg"
      fi
    fi
  done

  local kb=$((SIZE / 1024))
  echo "$head"
  echo "$sep"
  rate_row "LMTP ${kb} KB, 1 recipient: messages/s" lmtp1 '.messages_per_s'
  lat_row "… latency p50 / p99 (ms)" lmtp1 '.latency'
  rate_row "LMTP ${kb} KB, 50 recipients: messages/s" lmtp50 '.messages_per_s'
  rate_row "… recipients/s" lmtp50 '.recipients_per_s'
  lat_row "… latency p50 / p99 (ms)" lmtp50 '.latency'
  rate_row "… messages delivered in the run" lmtp50 '.delivered' noratio
  file_row "disk before the 50-recipient run (bytes)" disk-before
  file_row "disk right after it (bytes)" disk-after
  file_row "… grown per delivered message (bytes)" disk-per-msg ratio
  file_row "… of which Twinbox's store data files, sst and blob (bytes)" store-data
  file_row "… … per delivered message (bytes)" store-data-per-msg
  file_row "… of which Twinbox's write-ahead log (bytes)" store-wal
  local op
  for op in fetch headers search append total; do
    rate_row "IMAP $op: ops/s" imap "(.ops + [.total])[] | select(.name == \"$op\") | .ops_per_s"
    lat_row "… latency p50 / p99 (ms)" imap "(.ops + [.total])[] | select(.name == \"$op\") | .latency"
  done
  rate_row "failures, all runs" all-failures '.' noratio
}

# ---------------------------------------------------------------- main

need jq jq
need curl curl
need go golang
build_twinbox
DOVECOT_VERSION=
TWINBOX_VERSION=$(git describe --always --dirty 2>/dev/null || echo dev)

if [ "$WHICH" != twinbox ]; then
  start_dovecot
  DOVECOT_VERSION=$(dovecot --version | cut -d' ' -f1)
  run_loads dovecot "$DOVECOT_IMAP" "$DOVECOT_LMTP" "$D/mail"
  # Dovecot's LMTP hard-links one saved copy into the other recipients'
  # maildirs when it can; du counts each inode once.
  find "$D/mail" -type f \( -path '*/cur/*' -o -path '*/new/*' \) | wc -l >"$OUT/dovecot-files"
  find "$D/mail" -type f \( -path '*/cur/*' -o -path '*/new/*' \) -printf '%i\n' | sort -u | wc -l >"$OUT/dovecot-inodes"
  stop_dovecot
fi
if [ "$WHICH" != dovecot ]; then
  start_twinbox
  # The login probe appended one message to reader$READERS's bench-probe.
  run_loads twinbox "$TWINBOX_IMAP" "$TWINBOX_LMTP" "$T"
  stop_twinbox
fi
for s in dovecot twinbox; do
  if ls "$OUT/$s"-*.json >/dev/null 2>&1; then
    jq -s '[.[] | if .protocol then .failed else .total.failed end] | add' \
      "$OUT/$s"-lmtp50.json "$OUT/$s"-lmtp1.json "$OUT/$s"-imap.json >"$OUT/$s-all-failures.json"
  fi
done

{
  echo
  echo "Machine: $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)), $(free -g | awk '/^Mem:/ {print $2}') GiB," \
    "$(df -T "$WORK" | awk 'NR == 2 {print $2}') on $(df "$WORK" | awk 'NR == 2 {print $1}'), kernel $(uname -r), $(go version | cut -d' ' -f3)."
  echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Run: \`DURATION=$DURATION SESSIONS=$SESSIONS SIZE=$SIZE PRELOAD=$PRELOAD scripts/bench-dovecot.sh $WHICH\`."
  echo
  report
  echo
  echo "Loads: \`twinbox bench\`, $SESSIONS sessions, $DURATION each, $SIZE-byte messages;"
  echo "LMTP recipients drawn from user1..user$USERS (50 recipients: all of them);"
  echo "IMAP as reader1..reader$READERS (one per session), each INBOX preloaded to $PRELOAD messages,"
  echo "mix $MIX (fetch: one message BODY.PEEK[]; headers: 50 messages ENVELOPE FLAGS BODYSTRUCTURE;"
  echo "search: UID SEARCH by SUBJECT, FROM or UNSEEN; append: one message to \`bench\`)."
  echo "Disk: \`du -sb\` (apparent bytes) of Dovecot's mail directory (maildirs and indexes) and of"
  echo "Twinbox's whole data directory (store, passwd-file, certificate), each empty before the"
  echo "50-recipient run and measured right after it. Twinbox's figure includes Pebble's write-ahead"
  echo "log (its own row): logs of 32 MiB memtables not yet flushed plus obsolete ones kept for reuse,"
  echo "a cost set by the memtable size rather than by the mail stored; the data files are what"
  echo "grows with the mail."
  for s in dovecot twinbox; do
    [ -s "$OUT/$s-lmtp1.json" ] || continue
    echo "IMAP ran last, on the same server: by then ${s^} had taken" \
      "$(jq -s '[.[].recipients_delivered] | add' "$OUT/$s-lmtp50.json" "$OUT/$s-lmtp1.json") LMTP deliveries" \
      "(fixed durations, different rates); the readers' INBOXes held $PRELOAD messages on both."
  done
  if [ -s "$OUT/dovecot-files" ]; then
    echo "Dovecot's maildirs held $(cat "$OUT/dovecot-files") message files on $(cat "$OUT/dovecot-inodes") distinct inodes"
    echo "at the end (LMTP saves a multi-recipient message once and hard-links it where it can; du counts an inode once)."
  fi
  echo "Durability: Dovecot runs with its default \`mail_fsync = optimized\`, which fsyncs each saved"
  echo "message on commit before LMTP replies; Twinbox fsyncs before every acknowledgement."
} | tee "$OUT/report.md"
