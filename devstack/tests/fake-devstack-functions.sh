# shellcheck shell=bash
# Copyright 2026 The nova-vtpm Authors
# SPDX-License-Identifier: Apache-2.0
#
# A minimal stand-in for the devstack functions that nova-vtpm's devstack
# plugin calls, so that nova_vtpm/tests/functional/test_devstack_plugin.py
# can run the plugin's phases for real (bash executes plugin.sh, settings and
# lib/*) on a temporary tree. Configuration functions write real files;
# functions that would install, start or stop something, or call a cloud,
# append one line per call to $FAKE_DEVSTACK_LOG instead (the function name,
# then its arguments, each quoted with printf %q).
#
# Stood in (devstack file: function -> behaviour here):
#   functions-common: define_plugin, plugin_requires (no-ops, as in devstack);
#       enable_service, disable_service, is_service_enabled (ENABLED_SERVICES
#       and DISABLED_SERVICES, exact names); is_plugin_enabled
#       (DEVSTACK_PLUGINS); trueorfalse; warn, die (messages, die exits 1);
#       install_package, run_process, stop_process (recorded; run_process
#       and stop_process only for an enabled service, as in devstack);
#       test_with_retry (recorded, succeeds)
#   inc/ini-config: iniset [-sudo], iniget (real ini files, in Python)
#   inc/python: pip_install (recorded with $PIP_VIRTUAL_ENV), setup_develop
#       (recorded), get_python_exec_prefix ($DEVSTACK_VENV/bin)
#   lib/database: database_connection_url (a mysql+pymysql URL),
#       recreate_database (recorded)
#   lib/keystone: create_service_user (recorded)
#   stack.sh: echo_summary (printed and recorded)
# Commands stood in by shell functions of the same name:
#   sudo (runs the command as the current user), openstack (recorded; keeps
#   the flavors it created in $FAKE_DEVSTACK_ROOT/flavors so that
#   "flavor show" finds them).
# Programs outside devstack, through the plugin's own settings:
#   KEYLIME_PYTHON=fake_system_python3: "-m venv DIR" makes a virtualenv
#   of stubs (bin/python, bin/pip download, bin/keylime_upgrade_config) that
#   record their calls; "-c 'import gpg...'" prints a stub gpg directory.
#
# Usage: source this file, set the devstack variables (DEST, DATA_DIR,
# NOVA_CONF, ...), then "fake_devstack_phase stack install" etc.

: "${FAKE_DEVSTACK_ROOT:?set FAKE_DEVSTACK_ROOT to a scratch directory}"
: "${FAKE_DEVSTACK_LOG:=$FAKE_DEVSTACK_ROOT/calls.log}"
: "${FAKE_DEVSTACK_PYTHON:=python3}"
export FAKE_DEVSTACK_ROOT FAKE_DEVSTACK_LOG FAKE_DEVSTACK_PYTHON

function _fake_record {
    local line="" arg
    for arg in "$@"; do
        line+="$(printf '%q' "$arg") "
    done
    echo "${line% }" >> "$FAKE_DEVSTACK_LOG"
}

# stack.sh
function echo_summary {
    echo "$*"
    _fake_record echo_summary "$*"
}

# functions-common
function define_plugin {
    :
}

function plugin_requires {
    :
}

function enable_service {
    local service
    for service in "$@"; do
        if [[ ",${DISABLED_SERVICES:-}," == *",$service,"* ]]; then
            warn "$LINENO" "Attempt to enable_service $service when it has been disabled"
            continue
        fi
        if ! is_service_enabled "$service"; then
            ENABLED_SERVICES="${ENABLED_SERVICES:+$ENABLED_SERVICES,}$service"
        fi
    done
}

function disable_service {
    local service
    for service in "$@"; do
        ENABLED_SERVICES=$(echo ",$ENABLED_SERVICES," | sed -e "s/,$service,/,/g" -e 's/^,//' -e 's/,$//')
        DISABLED_SERVICES="${DISABLED_SERVICES:+$DISABLED_SERVICES,}$service"
    done
}

function is_service_enabled {
    local service
    for service in "$@"; do
        if [[ ",${ENABLED_SERVICES:-}," == *",$service,"* ]]; then
            return 0
        fi
    done
    return 1
}

function is_plugin_enabled {
    [[ ",${DEVSTACK_PLUGINS:-}," == *",$1,"* ]]
}

function trueorfalse {
    local default=$1 value=${!2:-}
    case "${value,,}" in
        1|yes|true|on) echo True ;;
        0|no|false|off) echo False ;;
        *) echo "$default" ;;
    esac
}

function warn {
    echo "[WARNING] $2"
    _fake_record warn "$2"
}

function die {
    echo "[ERROR] $2" >&2
    exit 1
}

function install_package {
    _fake_record install_package "$@"
}

function run_process {
    if is_service_enabled "$1"; then
        _fake_record run_process "$@"
    fi
}

function stop_process {
    if is_service_enabled "$1"; then
        _fake_record stop_process "$@"
    fi
}

function test_with_retry {
    _fake_record test_with_retry "$@"
}

# inc/python
function pip_install {
    _fake_record pip_install "venv=${PIP_VIRTUAL_ENV:-}" "$@"
}

function setup_develop {
    _fake_record setup_develop "$@"
}

function get_python_exec_prefix {
    echo "$DEVSTACK_VENV/bin"
}

# lib/database
function database_connection_url {
    echo "mysql+pymysql://root:$DATABASE_PASSWORD@$DATABASE_HOST/$1?charset=utf8"
}

function recreate_database {
    _fake_record recreate_database "$@"
}

# lib/keystone
function create_service_user {
    _fake_record create_service_user "$@"
}

# inc/ini-config
function _fake_ini {
    # -S: no site-packages, a fifth of the start-up time.
    "$FAKE_DEVSTACK_PYTHON" -S - "$@" <<'PY'
import os
import sys

action, path, section, option = sys.argv[1:5]
header = '[%s]' % section
lines = []
if os.path.exists(path):
    with open(path) as f:
        lines = f.read().splitlines()


def find():
    """(index of the section header, index of the option line or None)."""
    start = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith('[') and stripped.endswith(']'):
            if start is not None:
                break
            if stripped == header:
                start = i
            continue
        if start is not None and '=' in line and not stripped.startswith(('#', ';')):
            if line.split('=', 1)[0].strip() == option:
                return start, i
    return start, None


start, at = find()
if action == 'get':
    if at is not None:
        print(lines[at].split('=', 1)[1].strip())
    sys.exit(0)

value = sys.argv[5]
new = '%s = %s' % (option, value)
if start is None:
    lines += ['', header, new]
elif at is None:
    lines.insert(start + 1, new)
else:
    lines[at] = new
text = '\n'.join(lines) + '\n'
old = None
if os.path.exists(path):
    with open(path) as f:
        old = f.read()
if text != old:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
PY
}

function iniset {
    if [[ "$1" == "-sudo" ]]; then
        shift
    fi
    _fake_ini set "$1" "$2" "$3" "$4"
}

function iniget {
    _fake_ini get "$1" "$2" "$3"
}

# Commands
function sudo {
    "$@"
}

function openstack {
    _fake_record openstack "$@"
    local -a args=()
    local arg
    for arg in "$@"; do
        [[ "$arg" == --os-* ]] || args+=("$arg")
    done
    local flavors=$FAKE_DEVSTACK_ROOT/flavors
    if [[ "${args[0]} ${args[1]}" == "flavor show" ]]; then
        grep -qxF -- "${args[2]}" "$flavors" 2>/dev/null
    elif [[ "${args[0]} ${args[1]}" == "flavor create" ]]; then
        echo "${args[-1]}" >> "$flavors"
    fi
}

# The system interpreter Keylime's virtualenv is made from.
function fake_system_python3 {
    _fake_record fake_system_python3 "$@"
    if [[ "$1" == "-m" && "$2" == "venv" ]]; then
        _fake_make_venv "$3"
    elif [[ "$1" == "-c" && "$2" == *"import gpg"* ]]; then
        mkdir -p "$FAKE_DEVSTACK_ROOT/dist-packages/gpg"
        echo "$FAKE_DEVSTACK_ROOT/dist-packages/gpg"
    fi
}

function _fake_make_venv {
    local venv=$1
    mkdir -p "$venv/bin" "$venv/lib/python3/site-packages"
    cat > "$venv/bin/python" <<EOF
#!/bin/bash
# fake virtualenv python
printf '%q ' "$venv/bin/python" "\$@" >> "\$FAKE_DEVSTACK_LOG"; echo >> "\$FAKE_DEVSTACK_LOG"
if [[ "\$1" == "-c" && "\$2" == *sysconfig* ]]; then
    echo "$venv/lib/python3/site-packages"
fi
EOF
    cat > "$venv/bin/pip" <<EOF
#!/bin/bash
# fake pip: "download ... --dest DIR keylime==VERSION" writes an sdist with templates/
printf '%q ' "$venv/bin/pip" "\$@" >> "\$FAKE_DEVSTACK_LOG"; echo >> "\$FAKE_DEVSTACK_LOG"
if [[ "\$1" == "download" ]]; then
    dest=""; req=""
    while [[ \$# -gt 0 ]]; do
        case "\$1" in
            --dest|-d) dest=\$2; shift ;;
            keylime==*) req=\$1 ;;
        esac
        shift
    done
    version=\${req#keylime==}
    work=\$(mktemp -d)
    mkdir -p "\$work/keylime-\$version/templates/2.6"
    tar -czf "\$dest/keylime-\$version.tar.gz" -C "\$work" "keylime-\$version"
    rm -rf "\$work"
fi
EOF
    cat > "$venv/bin/keylime_upgrade_config" <<EOF
#!/bin/bash
# fake keylime_upgrade_config: the default files, one section each
printf '%q ' "$venv/bin/keylime_upgrade_config" "\$@" >> "\$FAKE_DEVSTACK_LOG"; echo >> "\$FAKE_DEVSTACK_LOG"
out=""
while [[ \$# -gt 0 ]]; do
    [[ "\$1" == "--out" ]] && out=\$2
    shift
done
mkdir -p "\$out"
printf '[verifier]\nversion = 2.6\nip = "127.0.0.1"\nport = 8881\ntls_dir = generate\ndatabase_url = sqlite\n' > "\$out/verifier.conf"
printf '[registrar]\nversion = 2.6\nip = "127.0.0.1"\nport = 8890\ntls_port = 8891\ntls_dir = default\n' > "\$out/registrar.conf"
printf '[tenant]\nversion = 2.6\nverifier_ip = 127.0.0.1\ntls_dir = default\ntpm_cert_store = /var/lib/keylime/tpm_cert_store\n' > "\$out/tenant.conf"
printf '[ca]\nversion = 2.6\n' > "\$out/ca.conf"
printf '[logging]\nversion = 2.6\n' > "\$out/logging.conf"
EOF
    chmod +x "$venv/bin/python" "$venv/bin/pip" "$venv/bin/keylime_upgrade_config"
}

# How devstack runs a plugin: settings once, then plugin.sh with the mode
# and the phase as arguments.
function fake_devstack_phase {
    # shellcheck disable=SC1091 # the path is the checkout under test
    source "$NOVA_VTPM_DIR/devstack/settings"
    # shellcheck disable=SC1091
    source "$NOVA_VTPM_DIR/devstack/plugin.sh" "$@"
}
