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
exec "$venv/bin/python" -m nova_vtpm.lab "$@"
