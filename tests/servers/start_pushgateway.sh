#!/bin/sh
# start_pushgateway.sh — run a throwaway Prometheus Pushgateway on 127.0.0.1 for the sink tests.
#
# Usage: tests/servers/start_pushgateway.sh [PORT]
# Prints "PORT <n>" on stdout, then replaces itself with the gateway (so the caller's pid is the
# gateway's pid and killing it stops the gateway). Without PORT a free port is picked. Metrics
# are kept in memory only (empty --persistence.file). The binary is taken from $PUSHGATEWAY_BIN,
# else prometheus-pushgateway (Debian) or pushgateway (upstream) on PATH.
# Exit 127 with a message when no binary is found (CI installs it: apt-get install -y
# prometheus-pushgateway).
set -eu

bin="${PUSHGATEWAY_BIN:-}"
if [ -z "$bin" ]; then
    bin=$(command -v prometheus-pushgateway 2>/dev/null || command -v pushgateway 2>/dev/null || true)
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "start_pushgateway.sh: prometheus-pushgateway not found; install it with" \
         "'apt-get install -y prometheus-pushgateway' (or set PUSHGATEWAY_BIN)" >&2
    exit 127
fi

port="${1:-}"
if [ -z "$port" ]; then
    # Ask the kernel for a free port. Another process could take it before the gateway binds;
    # the caller sees the gateway exit and simply starts this script again.
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
fi
echo "PORT $port"
exec "$bin" --web.listen-address="127.0.0.1:$port" --persistence.file="" --log.level=warn
