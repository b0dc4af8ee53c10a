#!/usr/bin/env bash
# The multi-host test builds network namespaces (ip netns, veth) and gives each host its own hostname
# (unshare --uts): install Debian's iproute2 and util-linux when missing and we are root.
set -euo pipefail
command -v ip >/dev/null && command -v unshare >/dev/null && command -v runuser >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux >/dev/null
else
  echo "ip/unshare are not installed (apt-get install iproute2 util-linux): the multi-host test will skip" \
    "(fail under CI=true)" >&2
fi
