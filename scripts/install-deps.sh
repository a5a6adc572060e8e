#!/bin/sh
# Install the Debian packages CoreVital builds and tests against (called by the Makefile when
# pkg-config cannot find them). Needs root or sudo.
set -e
# zlib1g-dev: gzip request bodies of the HTTP sink (libcurl cannot compress uploads).
# libsqlite3-dev: the run store (src/store/store.c, --store, corevital runs).
# libssl-dev: libcrypto's SHA-256 verifies downloaded Hub blobs (src/io/hub.c).
PKGS="libcjson-dev libutf8proc-dev libyaml-dev libcurl4-openssl-dev zlib1g-dev libssl-dev libsqlite3-dev check pkg-config"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq $PKGS
