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

"""Benchmark: the vTPM state guard's cost per instance, next to swtpm's own.

After a migration the guard reads the vTPM identity offline and backs the
state up. This measures, in one run, on one libvirt-made state (swtpm_setup
exactly as libvirt runs it, with a private swtpm-localca):

* ``read_identity``: private copy, private swtpm on socket pairs, init,
  TPM2_Startup, EK certificate (NV) and EK public key, orderly shutdown;
* ``backup``: the ciphertext files and manifest into a LocalDirectoryStore
  (with fsync), host facts cached;
* ``guard``: both, i.e. the per-instance overhead after a migration;
* swtpm's own state transfer, as QEMU does it in a migration stream:
  ``swtpm_ioctl --save permanent|volatile|savestate`` on a running source,
  and on the destination a new swtpm on an empty directory with the same
  key, ``--stop``, three ``--load``, ``-i``;
* backing up N state files (copies of one state, one instance each).

Usage: python benchmarks/state.py [--rounds N] [--files N]
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from nova_vtpm.swtpm import backup
from nova_vtpm.swtpm import capabilities
from nova_vtpm.swtpm import keys
from nova_vtpm.swtpm import state

GOAL_MS = 100.0
SECRET = b'bench-secret-0123456789abcdef'
UUID = '00000000-0000-4000-8000-000000000001'
VMID = 'instance-00000001:' + UUID
BLOB_TYPES = ('permanent', 'volatile', 'savestate')
SHM = '/dev/shm'


def ms(seconds):
    return seconds * 1000.0


def make_state(work):
    """A libvirt-made vTPM state in ``<work>/root/<uuid>/tpm2``."""
    xdg = os.path.join(work, 'xdg')
    os.makedirs(xdg)
    env = dict(os.environ, XDG_CONFIG_HOME=xdg)
    subprocess.run(['swtpm_setup', '--create-config-files',
                    'skip-if-exist,root'], env=env, check=True,
                   capture_output=True, timeout=60)
    sd = state.StateDir(os.path.join(work, 'root'), UUID)
    os.makedirs(sd.path, mode=0o700)
    read_end, write_end = os.pipe()
    os.write(write_end, SECRET)
    os.close(write_end)
    started = time.monotonic()
    try:
        subprocess.run(
            ['swtpm_setup', '--tpm2', '--pwdfile-fd', str(read_end),
             '--cipher', 'aes-256-cbc', '--tpm-state', sd.path,
             '--vmid', VMID, '--logfile', os.path.join(work, 'setup.log'),
             '--createek', '--create-ek-cert', '--create-platform-cert',
             '--lock-nvram', '--not-overwrite'],
            pass_fds=(read_end,), env=env, check=True, capture_output=True,
            timeout=120)
    finally:
        os.close(read_end)
    return sd, time.monotonic() - started


def summary(samples):
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, int(round(0.95 * len(samples))) - 1)]
    return statistics.median(samples), p95, statistics.mean(samples)


def cpu_seconds():
    """CPU time of this process and its reaped children (swtpm)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + children.ru_utime
            + children.ru_stime)


def run_guard(sd, store, rounds, tmp_dir=None):
    """(read ms, backup ms, total ms, total CPU ms) per round."""
    reads, backups, totals, cpus = [], [], [], []
    for _ in range(rounds):
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        identity = sd.read_identity(SECRET, tmp_dir=tmp_dir)
        t1 = time.perf_counter()
        backup.backup(sd, store, identity=identity, reason='benchmark')
        t2 = time.perf_counter()
        cpus.append(ms(cpu_seconds() - c0))
        reads.append(ms(t1 - t0))
        backups.append(ms(t2 - t1))
        totals.append(ms(t2 - t0))
    return reads, backups, totals, cpus


class Swtpm(object):
    """swtpm on unix sockets, driven by swtpm_ioctl (as QEMU/libvirt do)."""

    def __init__(self, work, name, state_dir, key_file):
        self.ctrl = os.path.join(work, name + '.ctrl')
        self.state_dir = state_dir
        cmd = ['swtpm', 'socket', '--tpm2',
               '--tpmstate', 'dir=%s,mode=0600' % state_dir,
               '--ctrl', 'type=unixio,path=%s' % self.ctrl,
               '--server', 'type=unixio,path=%s' % os.path.join(
                   work, name + '.sock'),
               '--key', 'file=%s,format=hex,mode=aes-256-cbc' % key_file,
               '--migration-key',
               'file=%s,format=hex,mode=aes-256-cbc' % key_file,
               '--log', 'file=%s' % os.path.join(work, name + '.log')]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        for _ in range(500):
            if os.path.exists(self.ctrl):
                break
            if self.proc.poll() is not None:
                raise RuntimeError('swtpm exited with %d'
                                   % self.proc.returncode)
            time.sleep(0.002)
        else:
            raise RuntimeError('swtpm did not create %s' % self.ctrl)

    def ioctl(self, *args):
        subprocess.run(['swtpm_ioctl', '--unix', self.ctrl] + list(args),
                       check=True, capture_output=True, timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.ioctl('-s')
                self.proc.wait(timeout=10)
            except (subprocess.SubprocessError, OSError):
                self.proc.kill()
                self.proc.wait()


def run_swtpm_transfer(sd, work, rounds):
    """Times of swtpm's own save (source) and load (destination)."""
    key_file = os.path.join(work, 'key.hex')
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, keys.derive_key(SECRET).hex().encode())
    os.close(fd)
    src_dir = os.path.join(work, 'src')
    shutil.copytree(sd.path, src_dir)
    source = Swtpm(work, 'src', src_dir, key_file)
    saves, loads = [], []
    try:
        source.ioctl('-i')
        for i in range(rounds):
            blobs = {t: os.path.join(work, '%s.%d' % (t, i))
                     for t in BLOB_TYPES}
            t0 = time.perf_counter()
            for blob_type in BLOB_TYPES:
                source.ioctl('--save', blob_type, blobs[blob_type])
            t1 = time.perf_counter()
            dst_dir = os.path.join(work, 'dst.%d' % i)
            os.mkdir(dst_dir, 0o700)
            dest = Swtpm(work, 'dst%d' % i, dst_dir, key_file)
            try:
                dest.ioctl('--stop')
                for blob_type in BLOB_TYPES:
                    dest.ioctl('--load', blob_type, blobs[blob_type])
                dest.ioctl('-i')
                t2 = time.perf_counter()
            finally:
                dest.stop()
            saves.append(ms(t1 - t0))
            loads.append(ms(t2 - t1))
    finally:
        source.stop()
    return saves, loads


def run_many_backups(sd, work, count):
    """Back up ``count`` states (one instance each); (total s, store)."""
    root = os.path.join(work, 'many')
    with open(os.path.join(sd.path, sd.permall_name), 'rb') as f:
        permall = f.read()
    dirs = []
    for i in range(count):
        many = state.StateDir(root, '00000000-0000-4000-8000-%012d' % i)
        os.makedirs(many.path, mode=0o700)
        fd = os.open(os.path.join(many.path, many.permall_name),
                     os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, permall)
        os.close(fd)
        dirs.append(many)
    store = backup.LocalDirectoryStore(os.path.join(work, 'many-store'))
    facts = capabilities.host_facts()
    t0 = time.perf_counter()
    for many in dirs:
        backup.backup(many, store, reason='benchmark', host_facts=facts)
    backup_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    for many in dirs:
        (manifest,) = store.list(many.instance_uuid)
        backup.verify(store, many.instance_uuid, manifest['backup_id'])
    verify_seconds = time.perf_counter() - t0
    return backup_seconds, verify_seconds


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=20,
                        help='guard and swtpm transfer rounds (default 20)')
    parser.add_argument('--files', type=int, default=1000,
                        help='states to back up in bulk (default 1000)')
    return parser.parse_args(argv)


def row(label, samples):
    median, p95, mean = summary(samples)
    print('  %-44s %8.1f %8.1f %8.1f' % (label, median, p95, mean))
    return median


def main(argv=None):
    args = parse_args(argv)
    for tool in ('swtpm', 'swtpm_setup', 'swtpm_ioctl'):
        if not shutil.which(tool):
            print('%s is not installed: nothing to measure.' % tool)
            return 2
    work = tempfile.mkdtemp(prefix='nova-vtpm-bench-state-')
    try:
        os.chmod(work, 0o700)
        sd, setup_seconds = make_state(work)
        t0 = time.perf_counter()
        facts = capabilities.host_facts(refresh=True)
        facts_ms = ms(time.perf_counter() - t0)
        print('Python %s; swtpm %s, libtpms %s; %d CPUs' % (
            sys.version.split()[0], facts.swtpm_version,
            facts.libtpms_version, os.cpu_count()))
        print('State: swtpm_setup as libvirt runs it: %.2f s; permall %d '
              'bytes' % (setup_seconds, sd.inspect().permall_size))
        print('Host facts (4 tool runs, cached 5 min per process): %.1f ms'
              % facts_ms)
        store = backup.LocalDirectoryStore(os.path.join(work, 'store'))
        sd.read_identity(SECRET)  # warm the page cache, not timed
        reads, backups, totals, cpus = run_guard(sd, store, args.rounds)
        shm = None
        if os.path.isdir(SHM) and os.access(SHM, os.W_OK):
            shm = run_guard(sd, store, args.rounds, tmp_dir=SHM)
        saves, loads = run_swtpm_transfer(sd, work, args.rounds)
        print()
        print('Per instance, %d rounds (ms)%s median      p95     mean' % (
            args.rounds, ' ' * 18))
        row('read_identity (copy in TMPDIR=%s)' % tempfile.gettempdir(),
            reads)
        if shm:
            row('read_identity (copy in %s, tmpfs)' % SHM, shm[0])
        row('backup (ciphertext + manifest, 4 fsyncs)', backups)
        guard = row('guard = read_identity + backup', totals)
        if shm:
            row('guard, copy in tmpfs', shm[2])
        row('guard CPU time (agent + its swtpm)', cpus)
        row('swtpm save: 3x swtpm_ioctl --save', saves)
        swtpm_load = row('swtpm load: empty dir, --stop, 3x --load, -i',
                         loads)
        row('swtpm save + load (what a migration does)',
            [a + b for a, b in zip(saves, loads)])
        print()
        print('Guard / swtpm load: %.2fx' % (guard / swtpm_load))
        print('goal: guard overhead < %.0f ms per instance: %s (wall median '
              '%.1f ms, p95 %.1f ms; CPU median %.1f ms)' % (
                  GOAL_MS, 'met' if guard < GOAL_MS else 'missed', guard,
                  summary(totals)[1], summary(cpus)[0]))
        if args.files:
            backup_s, verify_s = run_many_backups(sd, work, args.files)
            print()
            print('Bulk: %d state files backed up in %.2f s (%.2f ms each, '
                  '%.0f per s); verified in %.2f s (%.2f ms each)' % (
                      args.files, backup_s, ms(backup_s) / args.files,
                      args.files / backup_s, verify_s,
                      ms(verify_s) / args.files))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
