#!/usr/bin/env bash
# `rpztune validate` runs a submission's code in a bubblewrap sandbox: install Debian's bubblewrap when
# missing and we are root, then check that a sandbox with its own network namespace can start here.
set -euo pipefail
if ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "bubblewrap is not installed (apt-get install bubblewrap): rpztune validate and submit will refuse to run" >&2
    exit 0
  fi
fi
for tool in setpriv prlimit; do
  command -v "$tool" >/dev/null || echo "$tool (util-linux) is missing: rpztune validate needs it" >&2
done
userns=$([ "$(id -u)" = 0 ] || echo --unshare-user)
if ! bwrap --ro-bind / / --dev /dev --proc /proc --unshare-net --unshare-pid $userns --die-with-parent true; then
  echo "bubblewrap is installed but cannot create a sandbox here (user namespaces disabled?): rpztune validate will refuse to run" >&2
fi
