#!/usr/bin/env bash
# Install what the benchmark compares against and what its experiments use.
#   bash benchmarks/setup.sh         # Debian: nginx-light (the fast static server), curl, aria2
#                                    # PyPI: benchmarks/requirements.txt
# run.py works without any of it: a missing peer is skipped (and the report says so), and
# without nginx a built-in Python sendfile server stands in.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    missing=()
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v aria2c >/dev/null 2>&1 || missing+=(aria2)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
else
    echo "not root or no apt-get: install nginx-light, curl and aria2 yourself" >&2
fi
python -m pip install -q -r "$here/requirements.txt"
