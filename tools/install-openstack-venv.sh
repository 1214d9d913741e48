#!/usr/bin/env bash
# Copyright 2026 The nova-vtpm Authors
# SPDX-License-Identifier: Apache-2.0
#
# Install a real Keystone and Barbican from PyPI for nova-vtpm's functional
# tests (nova_vtpm/tests/functional/openstack_fixture.py), in a virtualenv of
# their own: they pin libraries that conflict with the test virtualenv's
# (in-process Nova), so they cannot share it. Nothing is installed system-wide
# and no service is started; the fixture runs them under gunicorn on loopback.
#
# Idempotent: a virtualenv stamped with these exact versions is left alone;
# any other (partial, older) one is completed in place by pip.
#
# Usage: tools/install-openstack-venv.sh
# Environment: NOVA_VTPM_OPENSTACK_VENV  the virtualenv
#                                        (<repo>/.cache/openstack-venv)
#              PYTHON                    the interpreter for it (python3)
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
venv=${NOVA_VTPM_OPENSTACK_VENV:-$repo/.cache/openstack-venv}
python=${PYTHON:-python3}

KEYSTONE_VERSION=30.0.0
BARBICAN_VERSION=23.0.0
GUNICORN_VERSION=27.0.1

log() { printf '[install-openstack-venv] %s\n' "$*"; }

stamp="$venv/.nova-vtpm-keystone-$KEYSTONE_VERSION-barbican-$BARBICAN_VERSION"
stamp="$stamp-gunicorn-$GUNICORN_VERSION"
if [ -e "$stamp" ]; then
    log "$venv is up to date"
    exit 0
fi
# One installer at a time (parallel test workers may all find no venv).
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -e "$stamp" ]; then
    log "$venv is up to date"
    exit 0
fi

start=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
    log "creating virtualenv $venv"
    "$python" -m venv "$venv"
fi
log "installing keystone==$KEYSTONE_VERSION barbican==$BARBICAN_VERSION" \
    "gunicorn==$GUNICORN_VERSION into $venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "keystone==$KEYSTONE_VERSION" \
    "barbican==$BARBICAN_VERSION" "gunicorn==$GUNICORN_VERSION"
# What the fixture imports or runs: fail here, not in a test.
"$venv/bin/python" -W ignore -c 'import keystone.server.wsgi, barbican.api.app'
for tool in keystone-manage barbican-manage gunicorn; do
    [ -x "$venv/bin/$tool" ] || { log "ERROR: $venv/bin/$tool missing" >&2; exit 1; }
done
rm -f "$venv"/.nova-vtpm-keystone-*
touch "$stamp"
log "done in $(( $(date +%s) - start )) s"
