#!/bin/sh
# Install what the test suites need at run time, beyond the -dev packages of install-deps.sh:
#   prometheus-pushgateway  the real Pushgateway test_remote_sinks starts on 127.0.0.1
#   python3                 the small HTTP test servers in tests/servers/
#   xz-utils                unpacks the real tokenizer files of tests/data/tokenizers
#   chromium                a real browser (headless) that loads the HTML reports in test_view
# Called by `make test` (target test-deps); does nothing when everything is present.
set -e
missing=""
command -v prometheus-pushgateway >/dev/null 2>&1 || [ -x /usr/bin/prometheus-pushgateway ] ||
    [ -n "${PUSHGATEWAY_BIN:-}" ] || missing="$missing prometheus-pushgateway"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
command -v xz >/dev/null 2>&1 || missing="$missing xz-utils"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0
echo "corevital: installing test dependencies:$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
