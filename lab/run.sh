#!/usr/bin/env bash
# Builds the static twinbox binary into lab/ and starts the two-node lab
# (docker-compose.yml). Then, for example:
#   docker-compose exec a /twinbox user add alice     (password on stdin)
#   docker-compose exec b /twinbox user add alice
#   swaks --server 127.0.0.1:12525 --to alice@localhost
#   curl 'imap://127.0.0.1:21143/INBOX;UID=1' -u alice:PASSWORD   (b, the passive)
#   docker kill twinbox-a; curl -s http://127.0.0.1:28410/status  (b takes over)
set -euo pipefail
cd "$(dirname "$0")/.."
CGO_ENABLED=0 go build -trimpath -o lab/twinbox ./cmd/twinbox
exec docker-compose up --build "$@"
