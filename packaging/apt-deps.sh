#!/bin/sh
# Install the Debian packages named as arguments if any is missing: as root directly, otherwise
# print the exact command to run. Used by `make run` / `make test`.
set -e
missing=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: not a Debian/Ubuntu system; install the equivalents of:$missing" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
else
    echo "missing Debian packages; run this, then try again:" >&2
    echo "    sudo apt-get install -y$missing" >&2
    exit 1
fi
