#!/usr/bin/env bash
# Install Debian packages quietly: `scripts/apt_install.sh PKG...`. Prints only what a reader can act on
# (apt's errors), not its progress or debconf's notice that it delays configuration without apt-utils.
set -euo pipefail
[ $# -gt 0 ] || exit 0
command -v apt-get >/dev/null || { echo "apt-get not found; install these packages yourself: $*" >&2; exit 1; }
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
quiet() { "$@" 2>&1 >/dev/null | { grep -v '^debconf: ' >&2 || true; }; }
quiet $sudo apt-get update -qq
quiet $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
