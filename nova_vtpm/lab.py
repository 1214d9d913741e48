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

Run by ``./lab.sh``. Each step states what it expects; the lab exits 1 as
soon as one result differs.
"""

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


def main():
    with tempfile.NamedTemporaryFile('w', suffix='.conf') as conf:
        failures = run_check_steps(conf.name)
    print('\n== lab %s' % ('passed' if not failures else
                           'FAILED: %d step(s) wrong' % failures))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
