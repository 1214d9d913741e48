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

"""``nova-vtpm check``: resolve a flavor x image pair offline."""

import argparse
import json
import sys

from nova_vtpm import exception
from nova_vtpm import policy
from nova_vtpm import tpm

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def key_value(text):
    """argparse type for KEY=VALUE (VALUE may be empty, KEY may not)."""
    key, sep, value = text.partition('=')
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            'expected KEY=VALUE, got %r' % text)
    return key, value


def add_parser(subparsers):
    parser = subparsers.add_parser(
        'check',
        help='Resolve a flavor x image pair the way Nova will (offline).',
        description='Resolve flavor extra specs and image properties into '
                    'the vTPM Nova will create and the attestation nova-vtpm '
                    'will do, with the errors Nova would only raise at '
                    'scheduling time and the warnings it never gives. Exit '
                    'status: 0 no errors, 1 errors, 2 usage error.')
    parser.add_argument(
        '--flavor-spec', action='append', type=key_value, default=[],
        metavar='KEY=VALUE',
        help='A flavor extra spec, e.g. hw:tpm_version=2.0 (repeatable).')
    parser.add_argument(
        '--image-prop', action='append', type=key_value, default=[],
        metavar='KEY=VALUE',
        help='An image property, e.g. hw_tpm_model=tpm-crb (repeatable).')
    parser.add_argument(
        '--flavor-name', default=None,
        help='The flavor name used in messages.')
    parser.add_argument(
        '--image-name', default=None,
        help='The image name used in messages.')
    parser.add_argument(
        '--format', choices=('table', 'json'), default='table',
        help='Output format (default: table).')
    parser.set_defaults(func=run)
    return parser


def _to_dict(pairs, what):
    result = {}
    for key, value in pairs:
        if key in result and result[key] != value:
            sys.stderr.write(
                'nova-vtpm check: error: %s %s given twice with different '
                'values (%r and %r)\n' % (what, key, result[key], value))
            raise SystemExit(EXIT_USAGE)
        result[key] = value
    return result


def format_table(resolution):
    lines = []
    vtpm = resolution.vtpm
    if vtpm:
        lines.append('vTPM:         TPM %s, model %s, secret security %s' % (
            vtpm.version, vtpm.model, vtpm.secret_security))
    else:
        lines.append('vTPM:         none')
    att = resolution.attestation
    if att:
        policies = ', '.join('%s=%s' % (kind, getattr(att, kind) or '-')
                             for kind in tpm.POLICY_KINDS)
        lines.append('Attestation:  %s (%s)' % (att.mode, policies))
    else:
        lines.append('Attestation:  none')
    for title, items in (('Errors', resolution.errors),
                         ('Warnings', resolution.warnings)):
        if items:
            lines.append('%s:' % title)
            lines.extend('  - %s' % item for item in items)
    lines.append('Result:       %s' % (
        'OK' if resolution.ok else
        'FAILED (%d error%s)' % (len(resolution.errors),
                                 '' if len(resolution.errors) == 1 else 's')))
    return '\n'.join(lines)


def run(args, conf):
    flavor_specs = _to_dict(args.flavor_spec, 'flavor extra spec')
    image_props = _to_dict(args.image_prop, 'image property')
    group = conf.nova_vtpm_attestation
    tpm_policies = None
    if group.tpm_policy_file:
        try:
            tpm_policies = policy.load_tpm_policies(group.tpm_policy_file)
        except exception.PolicyFileError as e:
            sys.stderr.write('nova-vtpm check: error: %s\n' % e)
            return EXIT_USAGE
    resolution = tpm.resolve(
        flavor_specs, image_props, flavor_name=args.flavor_name,
        image_name=args.image_name, default_attestation=group.default_mode,
        tpm_policies=tpm_policies)
    if args.format == 'json':
        sys.stdout.write(json.dumps(resolution.to_dict(), indent=2,
                                    sort_keys=True) + '\n')
    else:
        sys.stdout.write(format_table(resolution) + '\n')
    return EXIT_OK if resolution.ok else EXIT_PROBLEMS
