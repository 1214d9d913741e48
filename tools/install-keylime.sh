#!/usr/bin/env bash
# Copyright 2026 The nova-vtpm Authors
# SPDX-License-Identifier: Apache-2.0
#
# Install a real Keylime for nova-vtpm's functional tests, without touching
# the system (no /etc/keylime, no services, no root-owned state):
#
# * <cache>/server: a virtualenv with keylime 7.14.3 (registrar, verifier,
#   tenant). Its wheel declares no dependencies, so its requirements are
#   installed explicitly; 'import gpg' comes from Debian's python3-gpg.
# * <cache>/etc: Keylime's default configuration, generated from the
#   templates/ of the 7.14.3 sdist (the wheel has none). The test fixtures
#   copy it and change ports and paths in their copies.
# * <cache>/agent: a virtualenv with keylime 6.4.3, the last release with
#   the Python agent (the guest side of the tests); it needs cryptography<38.
#
# Idempotent: a step whose result is there (and stamped) is skipped.
#
# Usage: tools/install-keylime.sh
# Environment: NOVA_VTPM_KEYLIME_CACHE   where to install (<repo>/.cache/keylime)
#              PYTHON                    the interpreter for the venvs (python3)
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${NOVA_VTPM_KEYLIME_CACHE:-$repo/.cache/keylime}
python=${PYTHON:-python3}

SERVER_VERSION=7.14.3
AGENT_VERSION=6.4.3
# keylime 7.14.3's requirements.txt (the wheel's metadata lists none).
SERVER_DEPS=(cryptography tornado pyzmq pyyaml requests 'sqlalchemy>=2.0.39'
             alembic packaging psutil lark pyasn1 pyasn1-modules jinja2
             jsonschema)
# What the 6.4.3 agent imports (its wheel declares no dependency either);
# cryptography<38: 6.4.3 uses APIs later releases removed.
AGENT_DEPS=('cryptography<38' psutil pyyaml requests packaging tornado
            lark-parser)

log() { printf '[install-keylime] %s\n' "$*"; }
die() { printf '[install-keylime] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$cache"
server="$cache/server"
agent="$cache/agent"
etc="$cache/etc"
sdist_dir="$cache/sdist"

make_venv() {
    local venv=$1
    if [ ! -x "$venv/bin/python" ]; then
        log "creating virtualenv $venv"
        "$python" -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip
    fi
}

site_of() {
    "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

# 1. The Keylime 7.14.3 server virtualenv.
stamp="$server/.nova-vtpm-keylime-$SERVER_VERSION"
if [ ! -e "$stamp" ]; then
    make_venv "$server"
    log "installing keylime==$SERVER_VERSION and its requirements into $server"
    "$server/bin/pip" install -q "${SERVER_DEPS[@]}" "keylime==$SERVER_VERSION"
    touch "$stamp"
else
    log "keylime $SERVER_VERSION: present in $server"
fi

# Debian's python3-gpg made visible to a virtualenv (a .pth file would
# expose all of dist-packages; a symlink exposes only gpg). Both Keylimes
# import it (keylime/signing.py); PyPI's gpg needs gpgme headers to build.
link_gpg() {
    local site gpg_dir
    site=$(site_of "$1")
    if [ ! -e "$site/gpg" ]; then
        gpg_dir=$(/usr/bin/python3 -c 'import gpg, os; print(os.path.dirname(gpg.__file__))' 2>/dev/null) \
            || die "Python module gpg not found: install Debian's python3-gpg"
        ln -s "$gpg_dir" "$site/gpg"
    fi
}
link_gpg "$server"
out=$("$server/bin/python" -c 'import gpg, keylime.cloud_verifier_tornado, keylime.cmd.registrar' 2>&1) \
    || die "keylime $SERVER_VERSION does not import in $server (python3-gpg must be built for $("$server/bin/python" -V)): $out"

# 2. Keylime's default configuration, from the sdist's templates.
if [ ! -e "$etc/.nova-vtpm-keylime-$SERVER_VERSION" ]; then
    tarball=$(ls "$sdist_dir"/keylime-"$SERVER_VERSION".tar.gz 2>/dev/null || true)
    if [ -z "$tarball" ]; then
        log "downloading the keylime $SERVER_VERSION sdist (for templates/)"
        mkdir -p "$sdist_dir"
        "$server/bin/pip" download -q --no-binary :all: --no-deps \
            -d "$sdist_dir" "keylime==$SERVER_VERSION"
        tarball="$sdist_dir/keylime-$SERVER_VERSION.tar.gz"
    fi
    [ -f "$tarball" ] || die "no $tarball after pip download"
    rm -rf "$sdist_dir/keylime-$SERVER_VERSION"
    tar -xzf "$tarball" -C "$sdist_dir"
    templates="$sdist_dir/keylime-$SERVER_VERSION/templates"
    [ -d "$templates" ] || die "the sdist has no templates/ directory"
    rm -rf "$etc.tmp"
    mkdir -p "$etc.tmp"
    log "generating the default configuration in $etc"
    "$server/bin/keylime_upgrade_config" --defaults --templates "$templates" \
        --out "$etc.tmp" >"$cache/upgrade_config.log" 2>&1 \
        || die "keylime_upgrade_config failed: $(tail -5 "$cache/upgrade_config.log")"
    for f in verifier.conf registrar.conf tenant.conf; do
        [ -f "$etc.tmp/$f" ] || die "keylime_upgrade_config wrote no $f"
    done
    touch "$etc.tmp/.nova-vtpm-keylime-$SERVER_VERSION"
    rm -rf "$etc"
    mv "$etc.tmp" "$etc"
else
    log "default configuration: present in $etc"
fi

# 3. The keylime 6.4.3 Python agent, in a virtualenv of its own.
stamp="$agent/.nova-vtpm-keylime-agent-$AGENT_VERSION"
if [ ! -e "$stamp" ]; then
    make_venv "$agent"
    log "installing keylime==$AGENT_VERSION (Python agent) into $agent"
    "$agent/bin/pip" install -q "${AGENT_DEPS[@]}" "keylime==$AGENT_VERSION"
    touch "$stamp"
else
    log "keylime agent $AGENT_VERSION: present in $agent"
fi
link_gpg "$agent"
# Not keylime.keylime_agent: importing it opens the TPM.
out=$(cd "$cache" && "$agent/bin/python" -c \
    'import gpg, psutil, keylime.registrar_client, keylime.tpm.tpm_main, keylime.ima.ima, keylime.web_util' 2>&1) \
    || die "the keylime $AGENT_VERSION agent does not import in $agent: $out"

log "done: server $server, agent $agent, configuration $etc"
