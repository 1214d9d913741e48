#!/usr/bin/env bash
# Copyright 2026 The nova-vtpm Authors
# SPDX-License-Identifier: Apache-2.0
#
# Install what nova-vtpm's tests (or lab) need on a Debian/Ubuntu machine:
# the distribution packages bindep.txt lists for a profile, then a virtualenv
# with nova-vtpm, its test requirements and the real Nova wheel.
#
# Usage: tools/install-deps.sh [PROFILE]     (PROFILE: test (default) or lab)
# Environment: NOVA_VTPM_VENV   the virtualenv to create or update (.venv)
set -euo pipefail

cd "$(dirname "$0")/.."
profile=${1:-test}
venv=${NOVA_VTPM_VENV:-.venv}

log() { printf '[install-deps] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Packages of bindep.txt in the profile, without the bindep tool itself (it
# needs a virtualenv, which may itself need a package).
wanted=$(awk -v p="$profile" '
    /^[[:space:]]*(#|$)/ { next }
    { pkg = $1; prof = ""; if (match($0, /\[[^]]*\]/)) prof = substr($0, RSTART + 1, RLENGTH - 2)
      n = split(prof, a, " "); for (i = 1; i <= n; i++) if (a[i] == p) print pkg }' bindep.txt)
missing=""
for pkg in $wanted; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    log "installing distribution packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    # Packages must not start their system services here: the tests start
    # private instances on loopback themselves.
    policy=/usr/sbin/policy-rc.d
    added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        added_policy=1
    fi
    # shellcheck disable=SC2086 # one argument per package
    as_root apt-get install -y -qq --no-install-recommends $missing
    if [ -n "$added_policy" ]; then as_root rm -f "$policy"; fi
else
    log "distribution packages: all present"
fi

if [ ! -x "$venv/bin/python" ]; then
    log "creating virtualenv $venv"
    python3 -m venv "$venv"
fi
log "installing Python packages into $venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r requirements.txt -r test-requirements.txt \
    -r functional-requirements.txt
"$venv/bin/pip" install -q -e .

# Debian's python3-gpg (Keylime needs 'import gpg'; PyPI has no usable one)
# made visible to the virtualenv.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -d /usr/lib/python3/dist-packages/gpg ] && [ ! -e "$site/gpg" ]; then
    ln -s /usr/lib/python3/dist-packages/gpg "$site/gpg"
fi
log "done"
