#!/usr/bin/env bash
# System tools the test suite uses beyond Python: docker-compose (validates deploy/ without an
# engine), Chromium (the dashboard's browser test) and promtool (checks deploy/prometheus/ and
# each service's /metrics; Debian ships it in the `prometheus` package). Installed from Debian's
# packages if missing.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v chromium >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing tools: ${missing[*]} — install them (Debian: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]}…"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Only promtool is wanted from the prometheus package: where systemd started its server, stop it.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus >/dev/null
fi
