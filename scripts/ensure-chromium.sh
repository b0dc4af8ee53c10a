#!/usr/bin/env bash
# The report tests drive a real headless Chromium: install Debian's when missing and we are root.
set -euo pipefail
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "chromium is not installed (apt-get install chromium): the browser test will skip (fail under CI=true)" >&2
fi
