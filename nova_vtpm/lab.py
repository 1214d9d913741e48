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

"""The nova-vtpm lab: every step of what nova-vtpm does, printed.

Run by ``./lab.sh``. Each step states what it expects; the lab exits 1 if
one result differs. Parts:

1. ``check``: flavor x image pairs resolved offline by ``nova-vtpm check``;
2. ``lifecycle``: real in-process Nova (two fake-libvirt compute hosts)
   sending versioned notifications to a private RabbitMQ, a controller
   agent and the compute agent of compute1 as processes of their own, and
   vTPM servers booted, rebooted, resized, live-migrated (with a rollback)
   and deleted through Nova's API, with what the agents recorded and how
   long they took;
3. ``attestation``: vTPM servers booted through the same Nova get a swtpm
   guest TPM (``swtpm_setup`` as libvirt runs it, ``--vmid <instance
   name>:<uuid>``) and a Keylime agent; a nova-vtpm agent process with the
   ``keylime`` hook enrols them with a private Keylime 7.14 verifier and
   registrar (EK certificate checked against the compute host's CA, exported
   by ``nova-vtpm ca export``) until PASS; a server whose agent never
   registers, and one whose PCR 23 is extended, get the failure action (a
   lock, visible on the Nova server); deletion unenrols.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

# (title, flavor extra specs, image properties, expected exit status,
#  a text the output must hold)
CHECK_STEPS = (
    ('TPM 2.0 CRB, host secret security, attestation required',
     ['hw:tpm_version=2.0', 'hw:tpm_model=tpm-crb',
      'hw:tpm_secret_security=host', 'keylime:attestation=required'],
     [], 0, '"mode": "required"'),
    ('flavor TPM 2.0 x image TPM 1.2: Nova only fails this at scheduling',
     ['hw:tpm_version=2.0'], ['hw_tpm_version=1.2'], 1,
     'conflicting with image'),
    ('a TPM model without a version: Nova silently creates no vTPM',
     ['hw:tpm_model=tpm-crb'], [], 0, 'Nova silently creates no vTPM'),
    ('CRB with TPM 1.2', ['hw:tpm_version=1.2', 'hw:tpm_model=tpm-crb'], [],
     1, 'TPM model CRB is only valid with TPM version 2.0.'),
    ('attestation required without a TPM 2.0 vTPM',
     ['keylime:attestation=required'], [], 1,
     'Keylime attests TPM 2.0 only'),
    ('Windows image with TPM 1.2',
     ['hw:tpm_version=1.2', 'hw:tpm_secret_security=host'],
     ['os_type=windows'], 0, 'require TPM 2.0'),
)


def _step(title):
    print('\n== %s' % title, flush=True)


def run_check_steps(conf_file):
    failures = 0
    for title, specs, props, want_rc, want_text in CHECK_STEPS:
        _step('check: %s' % title)
        cmd = [sys.executable, '-m', 'nova_vtpm.cmd.cli', '--config-file',
               conf_file, 'check', '--format', 'json',
               '--flavor-name', 'lab-flavor', '--image-name', 'lab-image']
        for spec in specs:
            cmd += ['--flavor-spec', spec]
        for prop in props:
            cmd += ['--image-prop', prop]
        print('$ nova-vtpm check %s' % ' '.join(cmd[cmd.index('check') + 1:]))
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=60)
        took = time.perf_counter() - start
        print(proc.stdout.rstrip())
        ok = proc.returncode == want_rc and want_text in proc.stdout
        print('-> exit %d (expected %d), %.2f s: %s' % (
            proc.returncode, want_rc, took, 'OK' if ok else 'WRONG'))
        if not ok:
            print(proc.stderr)
            failures += 1
    return failures


def _say(line):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def run_lifecycle():
    """Run the lifecycle scenario as a test case; returns failures."""
    import unittest

    # Nova's test base classes read these; they are the lab's, not a
    # user's settings.
    os.environ.setdefault('OS_TEST_TIMEOUT', '900')
    from nova_vtpm.tests.functional import agent_fixture
    from nova_vtpm.tests.functional import nova_base
    from nova_vtpm.tests.functional import scenario

    class Lab(nova_base.VTPMServersTestBase):

        def test_lifecycle(self):
            _say('\n== lifecycle: in-process Nova (compute1, compute2) -> '
                 'RabbitMQ %s -> agents' % self.rabbit_url)
            controller = self.useFixture(agent_fixture.AgentProcess(
                self.rabbit_url, role='controller', host='controller'))
            compute1 = self.useFixture(agent_fixture.AgentProcess(
                self.rabbit_url, role='compute', host='compute1'))
            _say('agents: controller (pid %d), compute1 (pid %d)' % (
                controller.pid, compute1.pid))
            start = time.monotonic()
            result = scenario.LifecycleScenario(
                self, controller, compute1, say=_say).run()
            _say('\nlifecycle took %.1f s' % (time.monotonic() - start))
            for uuid, row in result['inventory'].items():
                self.assertIsNotNone(row['deleted_at'], uuid)
            counts = controller.journal.count_events()
            _say('controller journal: %s' % ', '.join(
                '%s %d' % kv for kv in sorted(counts.items())))
            self.assertNotIn('failed', counts)
            self.assertNotIn('rejected', counts)

    suite = unittest.defaultTestLoader.loadTestsFromTestCase(Lab)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(
        suite)
    return len(result.failures) + len(result.errors)


def run_attestation():
    """Run the attestation scenario as a test case; returns failures."""
    import unittest

    os.environ.setdefault('OS_TEST_TIMEOUT', '900')
    from nova_vtpm.tests.functional import keylime_fixture
    from nova_vtpm.tests.functional import nova_base
    from nova_vtpm.tests.functional import test_keylime_hook

    class Lab(nova_base.VTPMServersTestBase):

        def test_attestation(self):
            keylime_fixture.require_keylime()
            _say('\n== attestation: in-process Nova -> RabbitMQ %s -> '
                 'nova-vtpm agent (keylime hook) -> Keylime' %
                 self.rabbit_url)
            scenario = test_keylime_hook.AttestationScenario(self, say=_say)
            start = time.monotonic()
            scenario.setUp()
            result = scenario.run()
            _say('\nattestation took %.1f s (set-up included)'
                 % (time.monotonic() - start))
            self.assertTrue(result['s1_pass'].passed)
            self.assertTrue(result['s2_lock'][0])
            self.assertTrue(result['s1_lock'][0])
            for uuid, row in result['rows'].items():
                self.assertEqual('removed', row['state'], uuid)

    suite = unittest.defaultTestLoader.loadTestsFromTestCase(Lab)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(
        suite)
    return len(result.failures) + len(result.errors)


PARTS = ('check', 'lifecycle', 'attestation')


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='lab.sh', description=__doc__.split('\n\n')[0])
    parser.add_argument('parts', nargs='*', metavar='PART',
                        help='Parts to run: %s (default: all).' % ', '.join(
                            PARTS))
    args = parser.parse_args(argv)
    # Checked here: argparse checks an empty PART list against choices as
    # if it were one value, and refuses it.
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error('unknown part %s (choose from %s)' % (
            ', '.join(unknown), ', '.join(PARTS)))
    args.parts = args.parts or list(PARTS)
    failures = 0
    start = time.monotonic()
    if 'check' in args.parts:
        with tempfile.NamedTemporaryFile('w', suffix='.conf') as conf:
            failures += run_check_steps(conf.name)
    if 'lifecycle' in args.parts:
        failures += run_lifecycle()
    if 'attestation' in args.parts:
        failures += run_attestation()
    print('\n== lab %s in %.0f s' % (
        'passed' if not failures else
        'FAILED: %d step(s) wrong' % failures, time.monotonic() - start))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
