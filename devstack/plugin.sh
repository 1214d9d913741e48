#!/bin/bash
# Copyright 2026 The nova-vtpm Authors
# SPDX-License-Identifier: Apache-2.0
#
# nova-vtpm devstack plugin. devstack sources this file with the mode and
# the phase as arguments (https://docs.openstack.org/devstack/latest/plugins.html):
#
#   stack install      host packages, nova-vtpm, Keylime
#   stack post-config  Nova's vTPM and notification settings, the controller
#                      agent, Keylime's configuration, database, service user
#   stack extra        Keylime, the compute agent's settings, the EK trust
#                      directory, the agents, the example flavors
#   stack test-config  the tempest plugin's options
#   unstack            stops what extra started
#   clean              removes what the plugin created
#
# shellcheck source-path=SCRIPTDIR

NOVA_VTPM_PLUGIN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/nova-vtpm
source "$NOVA_VTPM_PLUGIN_DIR/lib/nova-vtpm"
# shellcheck source=lib/keylime
source "$NOVA_VTPM_PLUGIN_DIR/lib/keylime"

if [[ "$1" == "stack" ]]; then
    case "$2" in
        install)
            install_nova_vtpm
            install_keylime
            ;;
        post-config)
            configure_nova_vtpm
            configure_keylime
            init_nova_vtpm
            ;;
        extra)
            start_keylime
            configure_nova_vtpm_compute
            export_nova_vtpm_trust
            start_nova_vtpm
            create_nova_vtpm_flavors
            ;;
        test-config)
            if is_service_enabled tempest; then
                configure_nova_vtpm_tempest
            fi
            ;;
    esac
elif [[ "$1" == "unstack" ]]; then
    stop_nova_vtpm
    stop_keylime
elif [[ "$1" == "clean" ]]; then
    cleanup_nova_vtpm
    cleanup_keylime
fi
