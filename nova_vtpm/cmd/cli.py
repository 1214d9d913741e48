# Copyright 2026 The nova-vtpm Authors
#
#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""``nova-vtpm``: the operator command line.

Every subcommand lives in its own module under ``nova_vtpm.cmd`` with an
``add_parser(subparsers)`` function that registers it and sets ``func``.
Exit codes: 0 success, 1 the command ran and found problems, 2 usage or
configuration errors.
"""

import argparse
import sys

from oslo_config import cfg

from nova_vtpm.cmd import attestation
from nova_vtpm.cmd import ca
from nova_vtpm.cmd import check
from nova_vtpm.cmd import events
from nova_vtpm.cmd import instances
from nova_vtpm.cmd import migration
from nova_vtpm.cmd import reconcile
from nova_vtpm.cmd import secrets
from nova_vtpm.cmd import state
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm import version

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

COMMANDS = (check, events, instances, reconcile, state, migration, secrets,
            attestation, ca)


def build_parser():
    parser = argparse.ArgumentParser(
        prog='nova-vtpm',
        description='Validation, state protection and remote attestation '
                    "for OpenStack Nova's emulated TPMs.")
    parser.add_argument(
        '--config-file', action='append', metavar='PATH', default=None,
        help='A configuration file to read (repeatable; later files win). '
             'Default: those of %s that exist.' % ', '.join(
                 nova_vtpm_conf.DEFAULT_CONFIG_FILES))
    parser.add_argument(
        '--config-dir', action='append', metavar='DIR', default=None,
        help='A directory of *.conf files to read after the files.')
    parser.add_argument(
        '--version', action='version',
        version='%(prog)s ' + version.version_info.version_string())
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    subparsers.required = True
    for module in COMMANDS:
        module.add_parser(subparsers)
    return parser


def load_config(args, conf=None):
    """Parse the configuration files the command line names.

    :raises: SystemExit(2) with a message on a configuration error.
    """
    conf = conf or nova_vtpm_conf.CONF
    files = args.config_file
    if files is None:
        files = nova_vtpm_conf.default_config_files()
    try:
        conf(args=[], project='nova', prog='nova-vtpm',
             default_config_files=files,
             default_config_dirs=args.config_dir or [],
             validate_default_values=True)
    except cfg.Error as e:
        raise _usage_exit('configuration error: %s' % e)
    return conf


def _usage_exit(message):
    sys.stderr.write('nova-vtpm: error: %s\n' % message)
    return SystemExit(EXIT_USAGE)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    conf = load_config(args)
    try:
        return args.func(args, conf)
    except cfg.Error as e:
        # Values are only checked when read: a bad value is still a
        # configuration error, not a crash.
        raise _usage_exit('configuration error: %s' % e)


if __name__ == '__main__':
    sys.exit(main())
