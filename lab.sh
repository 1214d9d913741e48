#!/usr/bin/env bash
# Copyright 2026 The nova-vtpm Authors
# SPDX-License-Identifier: Apache-2.0
#
# The nova-vtpm lab: installs what it needs, then walks through what
# nova-vtpm does, printing each step. Exits non-zero if anything is wrong.
#
# Usage: ./lab.sh
set -euo pipefail

cd "$(dirname "$0")"
venv=${NOVA_VTPM_VENV:-.venv}
tools/install-deps.sh lab
# The attestation part needs a real Keylime (cached under .cache/keylime).
tools/install-keylime.sh
exec "$venv/bin/python" -m nova_vtpm.lab "$@"
