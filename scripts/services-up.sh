#!/usr/bin/env bash
# Start the local PostgreSQL and RabbitMQ if they are down, then wait until both answer.
# With DATABASE_URL / RABBITMQ_URL pointing elsewhere, only waits for those.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

host_port() {  # url default_port -> "host port"
  python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))
PY
}

read -r pg_host pg_port < <(host_port "${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/nps}" 5432)
read -r mq_host mq_port < <(host_port "${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/}" 5672)

if ! port_open "$pg_host" "$pg_port"; then
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
    echo "starting PostgreSQL…"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  else
    echo "PostgreSQL is not reachable at $pg_host:$pg_port and is not installed here." >&2
    echo "Start it yourself, or run 'make up' (docker compose) and retry." >&2
  fi
fi
if ! port_open "$mq_host" "$mq_port"; then
  if command -v rabbitmq-server >/dev/null; then
    echo "starting RabbitMQ…"
    rabbitmq-server -detached || true
  else
    echo "RabbitMQ is not reachable at $mq_host:$mq_port and is not installed here." >&2
    echo "Start it yourself, or run 'make up' (docker compose) and retry." >&2
  fi
fi

for _ in $(seq 1 60); do
  if port_open "$pg_host" "$pg_port" && port_open "$mq_host" "$mq_port"; then
    exit 0
  fi
  sleep 1
done
port_open "$pg_host" "$pg_port" || echo "PostgreSQL still not reachable at $pg_host:$pg_port" >&2
port_open "$mq_host" "$mq_port" || echo "RabbitMQ still not reachable at $mq_host:$mq_port" >&2
exit 1
