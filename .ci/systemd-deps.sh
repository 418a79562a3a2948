#!/usr/bin/env bash
# The unit-file tests need systemd-analyze. Install it when the machine lacks it (Debian/Ubuntu
# images, root or passwordless sudo); say clearly what is missing otherwise.
set -euo pipefail
if command -v systemd-analyze >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
  SUDO="sudo -n"
fi
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
elif command -v dnf >/dev/null 2>&1; then
  $SUDO dnf install -y -q systemd
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-deps: systemd-analyze is not installed and could not be installed; install systemd" >&2
  exit 1
fi
