#!/usr/bin/env bash
# Builds the static twinbox binary into lab/ and starts the two-node lab
# (docker-compose.yml). Then, for example:
#   docker-compose exec a /twinbox user add alice     (password on stdin)
#   docker-compose exec b /twinbox user add alice
#   swaks --server 127.0.0.1:12525 --to alice@localhost
#   curl 'imap://127.0.0.1:21143/INBOX;UID=1' -u alice:PASSWORD   (b, the passive)
#   docker-compose kill a; docker-compose exec b /twinbox status  (b takes over)
#   curl -s -H "Authorization: Bearer $(cat lab/admin.token)" http://127.0.0.1:28411/status
# The admin API over TCP needs the token of lab/admin.token, made here once
# (mode 0600); /metrics and /healthz are open on 18410 and 28410. A second
# lab on the same host: COMPOSE_PROJECT_NAME=lab2 TWINBOX_LAB_A=3
# TWINBOX_LAB_B=4 lab/run.sh -d (ports 3xxxx and 4xxxx; docker-compose.yml).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -s lab/admin.token ]; then
  (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >lab/admin.token)
fi
chmod 600 lab/admin.token
# The fence options name the peer's container by the project's name.
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-twinbox}"
CGO_ENABLED=0 go build -trimpath -o lab/twinbox ./cmd/twinbox
exec docker-compose up --build "$@"
