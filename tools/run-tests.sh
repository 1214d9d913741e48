#!/usr/bin/env bash
# Copyright 2026 The nova-vtpm Authors
# SPDX-License-Identifier: Apache-2.0
#
# Install everything the tests need, then run the unit and the functional
# tests with stestr. Exits non-zero on any failure.
#
# Usage: tools/run-tests.sh [unit|functional|all]   (default: all)
set -euo pipefail

cd "$(dirname "$0")/.."
which=${1:-all}
venv=${NOVA_VTPM_VENV:-.venv}

tools/install-deps.sh test
if [ "$which" = functional ] || [ "$which" = all ]; then
    # Real components that live in virtualenvs of their own (their pins
    # conflict with Nova's): Keylime 7.14.3 and its 6.4.3 Python agent,
    # Keystone + Barbican. Cached under .cache/.
    tools/install-keylime.sh
    tools/install-openstack-venv.sh
    # Missing real components fail the tests instead of skipping them.
    export NOVA_VTPM_REQUIRE_KEYLIME=1
fi

export PATH="$PWD/$venv/bin:$PATH"
# Nova's test settings (from its tox.ini).
export OS_STDOUT_CAPTURE=1 OS_STDERR_CAPTURE=1 OS_LOG_CAPTURE=1
export OS_TEST_TIMEOUT=${OS_TEST_TIMEOUT:-300}
export NOVA_RAISE_ON_GREENLET_LEAK=True

status=0
passed=0 failed=0 skipped=0
count() {
    # Add the last stestr run's figures to the totals.
    local stats
    stats=$(stestr last --subunit | subunit-stats 2>/dev/null || true)
    passed=$((passed + $(echo "$stats" | awk '/^Passed tests:/ {print $3}')))
    failed=$((failed + $(echo "$stats" | awk '/^Failed tests:/ {print $3}')))
    skipped=$((skipped + $(echo "$stats" | awk '/^Skipped tests:/ {print $3}')))
}
if [ "$which" = unit ] || [ "$which" = all ]; then
    echo "== unit tests"
    stestr --test-path ./nova_vtpm/tests/unit run || status=1
    count
fi
if [ "$which" = functional ] || [ "$which" = all ]; then
    echo "== functional tests (real Nova, RabbitMQ, PostgreSQL, swtpm)"
    stestr --test-path ./nova_vtpm/tests/functional run || status=1
    count
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
