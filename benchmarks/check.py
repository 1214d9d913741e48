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

"""Benchmark: nova_vtpm.tpm.resolve against Nova's own vTPM rules.

Resolves a realistic mix of flavor x image pairs (valid and invalid) three
ways in one run:

* ``nova-vtpm resolve``: :func:`nova_vtpm.tpm.resolve` on the plain dicts
  (it also resolves attestation and collects warnings and API errors, which
  Nova does not do);
* ``Nova, prebuilt objects``: ``get_vtpm_constraint`` and
  ``get_tpm_secret_security_constraint`` on ``Flavor`` and ``ImageMeta``
  objects built once before timing (object construction NOT included; an
  image Nova cannot type fails while building its ImageMeta, so its pairs
  only cost a lookup here);
* ``Nova, building objects``: the same, but building ``ImageMeta.from_dict``
  and ``Flavor`` from the dicts for every pair, as Nova does per request
  (object construction included).

Usage: python benchmarks/check.py [--pairs N]
"""

import argparse
import gc
import itertools
import sys
import time
import warnings

from nova_vtpm import tpm

try:
    with warnings.catch_warnings():
        # Nova's objects import eventlet, which warns that it is deprecated.
        warnings.simplefilter('ignore')
        from nova import exception as nova_exception
        from nova import objects as nova_objects
        from nova.virt import hardware as nova_hardware
        nova_objects.register_all()
except ImportError as exc:
    NOVA_IMPORT_ERROR = exc
else:
    NOVA_IMPORT_ERROR = None

NOVA_SUPPORTED_SECRET_SECURITY = ('user', 'host', 'deployment')

# A cloud's flavors: mostly no vTPM, the common vTPM flavors, and the
# mistakes operators make.
FLAVORS = (
    ('m1.small', {'hw:cpu_policy': 'shared'}),
    ('m1.medium', {}),
    ('m1.large', {'hw:mem_page_size': 'large', 'hw:cpu_policy': 'dedicated'}),
    ('vtpm.small', {'hw:tpm_version': '2.0'}),
    ('vtpm.crb', {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
                  'hw:tpm_secret_security': 'host'}),
    ('vtpm.deploy', {'hw:tpm_version': '2.0',
                     'hw:tpm_secret_security': 'deployment'}),
    ('vtpm.legacy', {'hw:tpm_version': '1.2', 'hw:tpm_model': 'tpm-tis'}),
    ('vtpm.attested', {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
                       'hw:tpm_secret_security': 'host',
                       'keylime:attestation': 'required',
                       'keylime:runtime_policy': 'ima-default',
                       'keylime:mb_policy': 'mb-uefi'}),
    ('vtpm.optional', {'hw:tpm_version': '2.0',
                       'keylime:attestation': 'optional'}),
    # Invalid or surprising ones.
    ('vtpm.typo', {'hw:tpm_version': '2'}),
    ('vtpm.badsec', {'hw:tpm_version': '2.0',
                     'hw:tpm_secret_security': 'bogus'}),
    ('vtpm.modelonly', {'hw:tpm_model': 'tpm-crb'}),
    ('vtpm.crb12', {'hw:tpm_version': '1.2', 'hw:tpm_model': 'tpm-crb'}),
)

IMAGES = (
    ('cirros-0.6.3', {'hw_disk_bus': 'virtio', 'os_type': 'linux'}),
    ('ubuntu-24.04', {'hw_machine_type': 'q35', 'hw_firmware_type': 'uefi',
                      'os_distro': 'ubuntu', 'os_type': 'Linux'}),
    ('debian-12', {}),
    ('windows-2022', {'hw_tpm_version': '2.0', 'hw_tpm_model': 'tpm-crb',
                      'hw_machine_type': 'q35', 'hw_firmware_type': 'uefi',
                      'os_secure_boot': 'required', 'os_type': 'windows'}),
    ('windows-11', {'hw_tpm_version': '2.0', 'os_type': 'windows'}),
    ('rhel-9-tpm12', {'hw_tpm_version': '1.2'}),
    ('fedora-attested', {'hw_tpm_version': '2.0',
                         'keylime_attestation': 'required',
                         'keylime_tpm_policy': 'pcr-boot'}),
    ('alpine-tis', {'hw_tpm_model': 'tpm-tis'}),
    # Invalid ones: Nova cannot build their ImageMeta.
    ('bad-model', {'hw_tpm_version': '2.0', 'hw_tpm_model': 'tpm-foo'}),
    ('bad-ostype', {'os_type': 'beos'}),
)


def nova_check(flavor, image_meta):
    """Nova's vTPM outcome for prebuilt objects: VTPM tuple, error or None."""
    try:
        config = nova_hardware.get_vtpm_constraint(flavor, image_meta)
    except (nova_exception.FlavorImageConflict,
            nova_exception.Invalid) as e:
        return e.format_message()
    if config is None:
        return None
    security = (nova_hardware.get_tpm_secret_security_constraint(flavor) or
                'user')
    if security not in NOVA_SUPPORTED_SECRET_SECURITY:
        return f"TPM secret security '{security}' is not supported."
    return (config.version, config.model, security)


def nova_build_and_check(flavor_name, flavor_specs, image_name, image_props):
    """Nova's outcome from the dicts, building the objects as Nova does."""
    try:
        image_meta = nova_objects.ImageMeta.from_dict(
            {'name': image_name, 'properties': image_props})
    except ValueError as e:
        return 'Invalid image metadata. Error: %s' % e
    flavor = nova_objects.Flavor(name=flavor_name, extra_specs=flavor_specs)
    return nova_check(flavor, image_meta)


def resolution_outcome(resolution):
    if resolution.nova_error:
        return resolution.nova_error
    vtpm = resolution.vtpm
    return (vtpm.version, vtpm.model, vtpm.secret_security) if vtpm else None


def build_pairs():
    return [(fname, fspecs, iname, iprops)
            for (fname, fspecs), (iname, iprops)
            in itertools.product(FLAVORS, IMAGES)]


def prebuild(pairs):
    """Nova's objects for each pair, built once.

    :returns: a (Flavor, ImageMeta) per pair, with Nova's error message
        instead of the ImageMeta for an image Nova cannot type.
    """
    flavors = {name: nova_objects.Flavor(name=name, extra_specs=dict(specs))
               for name, specs in FLAVORS}
    images = {}
    for name, props in IMAGES:
        try:
            images[name] = nova_objects.ImageMeta.from_dict(
                {'name': name, 'properties': dict(props)})
        except ValueError as e:
            images[name] = 'Invalid image metadata. Error: %s' % e
    return [(flavors[fname], images[iname])
            for fname, _fspecs, iname, _iprops in pairs]


def run_empty(pairs, rounds):
    for _ in range(rounds):
        for pair in pairs:
            pass


def run_resolve(pairs, rounds):
    resolve = tpm.resolve
    for _ in range(rounds):
        for fname, fspecs, iname, iprops in pairs:
            resolve(fspecs, iprops, fname, iname)


def run_nova_prebuilt(pairs, rounds):
    check = nova_check
    for _ in range(rounds):
        for flavor, image_meta in pairs:
            if image_meta.__class__ is str:
                # Nova failed while building this ImageMeta: nothing more
                # happens per request.
                continue
            check(flavor, image_meta)


def run_nova_building(pairs, rounds):
    check = nova_build_and_check
    for _ in range(rounds):
        for fname, fspecs, iname, iprops in pairs:
            check(fname, fspecs, iname, iprops)


def measure(paths, rounds, chunks):
    """Time every path on its pairs, ``rounds`` times in all.

    The rounds are cut into chunks and the paths take turns chunk by chunk,
    so that a busy machine slows every path alike.

    :param paths: a list of (key, function, pairs)
    :returns: {key: seconds}
    """
    seconds = dict.fromkeys(key for key, _func, _pairs in paths)
    for key in seconds:
        seconds[key] = 0.0
    chunks = max(1, min(chunks, rounds))
    done = 0
    gc.collect()
    for chunk in range(chunks):
        todo = rounds * (chunk + 1) // chunks - done
        done += todo
        for key, func, pairs in paths:
            start = time.perf_counter()
            func(pairs, todo)
            seconds[key] += time.perf_counter() - start
    return seconds


def agreement(pairs, objects):
    """Check that the three paths give the same outcome on every pair."""
    disagree = []
    for pair, (flavor, image_meta) in zip(pairs, objects):
        fname, fspecs, iname, iprops = pair
        ours = resolution_outcome(tpm.resolve(fspecs, iprops, fname, iname))
        built = nova_build_and_check(fname, dict(fspecs), iname,
                                     dict(iprops))
        prebuilt = (image_meta if isinstance(image_meta, str)
                    else nova_check(flavor, image_meta))
        if not ours == built == prebuilt:
            disagree.append((fname, iname, ours, built, prebuilt))
    return disagree


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pairs', type=int, default=1000000,
                        help='How many flavor x image pairs each path '
                             'resolves (default: 1,000,000).')
    parser.add_argument('--chunks', type=int, default=20,
                        help='The paths take turns in this many chunks '
                             '(default: 20).')
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error('--pairs must be at least 1')
    return args


def us(seconds, count):
    return seconds / count * 1e6


def main(argv=None):
    args = parse_args(argv)
    pairs = build_pairs()
    rounds = max(1, -(-args.pairs // len(pairs)))
    total = rounds * len(pairs)
    nova_fails = [bool(tpm.resolve(s, p, f, i).nova_error)
                  for f, s, i, p in pairs]
    categories = (
        ('valid', 'pairs Nova accepts',
         [pair for pair, fails in zip(pairs, nova_fails) if not fails]),
        ('failing', 'pairs Nova fails',
         [pair for pair, fails in zip(pairs, nova_fails) if fails]),
    )
    invalid_images = sum(1 for _name, props in IMAGES
                         if tpm.resolve({}, props).nova_error)
    print('Python %s, %s' % (sys.version.split()[0], sys.platform))
    print('Pair set: %d flavors x %d images = %d distinct pairs: %d Nova '
          'accepts (%d with a vTPM), %d Nova fails (%d of the %d images '
          'fail Nova\'s image metadata typing)' % (
              len(FLAVORS), len(IMAGES), len(pairs),
              len(categories[0][2]),
              sum(1 for f, s, i, p in categories[0][2]
                  if tpm.resolve(s, p, f, i).vtpm),
              len(categories[1][2]), invalid_images, len(IMAGES)))
    print('Resolving %d pairs per path (%d rounds of the pair set, paths '
          'taking turns in %d chunks)' % (total, rounds, args.chunks))

    paths = [('empty', 'empty loop', run_empty, lambda ps: ps),
             ('resolve', 'nova-vtpm resolve() from dicts (also attestation '
              '+ warnings)', run_resolve, lambda ps: ps)]
    if NOVA_IMPORT_ERROR is None:
        paths += [
            ('prebuilt', 'Nova, prebuilt objects (construction NOT '
             'included)', run_nova_prebuilt, prebuild),
            ('building', 'Nova, ImageMeta.from_dict + Flavor per pair '
             '(construction included)', run_nova_building, lambda ps: ps)]
    else:
        print('Nova is not importable (%s): timing nova-vtpm only.' % (
            NOVA_IMPORT_ERROR,))

    jobs = []
    for cat, _title, cat_pairs in categories:
        for key, _label, func, prepare in paths:
            jobs.append(((key, cat), func, prepare(cat_pairs)))
    seconds = measure(jobs, rounds, args.chunks)
    counts = {cat: rounds * len(cat_pairs)
              for cat, _title, cat_pairs in categories}

    labels = [label for _key, label, _func, _prepare in paths]
    width = max(len(label) for label in labels)
    print()
    print('  %-*s  %12s  %10s  %10s' % (
        width, 'per pair (µs)', 'all pairs', 'accepted', 'failing'))
    overall = {}
    for key, label, _func, _prepare in paths:
        overall[key] = seconds[key, 'valid'] + seconds[key, 'failing']
        print('  %-*s  %12.3f  %10.3f  %10.3f' % (
            width, label, us(overall[key], total),
            us(seconds[key, 'valid'], counts['valid']),
            us(seconds[key, 'failing'], counts['failing'])))
    print('  (times include the empty-loop overhead; total %s: %s)' % (
        'seconds', ', '.join('%s %.2f' % (key, overall[key])
                             for key, _l, _f, _p in paths)))

    if NOVA_IMPORT_ERROR is None:
        print()
        print('Ratios, nova-vtpm time / Nova time (below 1: nova-vtpm is '
              'faster):')
        for key, what in (('prebuilt', 'Nova with prebuilt objects'),
                          ('building', 'Nova building objects per pair')):
            print('  vs %-32s %5.2fx  (accepted %.2fx, failing %.2fx)' % (
                what + ':', overall['resolve'] / overall[key],
                seconds['resolve', 'valid'] / seconds[key, 'valid'],
                seconds['resolve', 'failing'] / seconds[key, 'failing']))
        disagree = agreement(pairs, prebuild(pairs))
        print()
        if disagree:
            print('WARNING: %d of %d distinct pairs disagree with Nova:' % (
                len(disagree), len(pairs)))
            for item in disagree:
                print('  %r' % (item,))
        else:
            print('Outcomes: all %d distinct pairs agree with Nova (vTPM '
                  'and exact error message).' % len(pairs))
    return 0


if __name__ == '__main__':
    sys.exit(main())
