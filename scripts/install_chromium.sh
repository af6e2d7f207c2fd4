#!/usr/bin/env bash
# Debian's Chromium for the Playwright browser test (Playwright never downloads a browser here).
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium
