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

"""Benchmark: Keylime enrolment by the keylime hook vs. the tenant CLI.

Everything real, on loopback: a private Keylime 7.14 verifier and registrar
(:class:`~nova_vtpm.tests.functional.keylime_fixture.KeylimeStack`), ``N``
swtpm guest TPMs manufactured as libvirt does (EK certificates of one
compute host's swtpm-localca) with keylime 6.4.3 agents registered under
their instance UUIDs. Three measurements:

A) Reaction time (``--agents`` servers): a nova-vtpm agent process (the
   ``keylime`` hook, RabbitMQ) receives ``instance.create.end`` for each
   server before its guest's Keylime agent starts, as Nova sends it when
   the server becomes ACTIVE; then the guests' agents start one after the
   other. Printed per server: the time from the moment the registrar has
   the activated registration (polled every 50 ms) to the moment the
   verifier has the agent (likewise). Goal: under 1 s.

B) Per-agent enrolment by the hook, in this process: registrar lookup, EK
   verification (chain to the trusted CA, CN binding, ``ek_tpm`` match)
   and the verifier add, for each of the ``N`` agents (deleted from the
   verifier first).

C) Per-agent enrolment as an operator would do it by hand: ``keylime_tenant
   -c add -u <uuid> -t <ip> -tp <port> --tpm_policy '{}'``, the tenant
   configured for this private stack ([tenant] tpm_cert_store = the trust
   directory, require_ek_cert = True, the verifier's and registrar's TLS
   ports and certificates). The wall time of each command.

Printed: the per-agent times of B and C, their medians and the ratio C/B
(goal: >= 10), and the reaction times of A.

Usage: .venv/bin/python benchmarks/enrol.py [--agents N]
(needs tools/install-keylime.sh and RabbitMQ).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib

REQUIRED = {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
            'hw:tpm_secret_security': 'host',
            'keylime:attestation': 'required'}


def ms(seconds):
    return seconds * 1000.0


def nova_payload(uuid, host='compute1', project='p1'):
    """An ``instance.create.end`` payload: the fields the agent reads."""
    def obj(name, data):
        return {'nova_object.name': name, 'nova_object.namespace': 'nova',
                'nova_object.version': '1.0', 'nova_object.data': data}
    return obj('InstanceCreatePayload', {
        'uuid': uuid, 'host': host, 'node': host, 'tenant_id': project,
        'user_id': 'u1', 'state': 'active', 'task_state': None,
        'image_uuid': str(uuidlib.uuid4()),
        'flavor': obj('FlavorPayload', {
            'name': 'vtpm.attested', 'flavorid': 'vtpm.attested',
            'memory_mb': 512, 'vcpus': 1, 'extra_specs': dict(REQUIRED)})})


class Poller(threading.Thread):
    """Watches the registrar and the verifier for a set of UUIDs."""

    def __init__(self, stack, uuids, interval=0.05):
        super().__init__(daemon=True)
        self.registrar = stack.registrar_client()
        self.verifier = stack.verifier_client()
        self.uuids = list(uuids)
        self.interval = interval
        self.registered = {}
        self.added = {}
        self.stop = threading.Event()

    def run(self):
        from nova_vtpm.keylime import client
        while not self.stop.is_set():
            for uuid in self.uuids:
                if uuid not in self.registered:
                    try:
                        self.registrar.get_agent(uuid)
                        self.registered[uuid] = time.monotonic()
                    except client.AgentNotRegistered:
                        pass
            if set(self.registered) - set(self.added):
                added = set(self.verifier.list_agents(bulk=False))
                now = time.monotonic()
                for uuid in self.uuids:
                    if uuid in added and uuid not in self.added:
                        self.added[uuid] = now
            if len(self.added) == len(self.uuids):
                return
            self.stop.wait(self.interval)


def wait_gone(verifier, uuids, timeout=60):
    from nova_vtpm.keylime import client
    deadline = time.monotonic() + timeout
    for uuid in uuids:
        verifier.delete_agent(uuid, missing_ok=True)
    for uuid in uuids:
        while True:
            try:
                verifier.get_agent(uuid)
            except client.AgentNotFound:
                break
            if time.monotonic() > deadline:
                raise RuntimeError('the verifier did not delete %s' % uuid)
            time.sleep(0.1)


def wait_pass(verifier, uuids, timeout=60):
    deadline = time.monotonic() + timeout
    for uuid in uuids:
        while not verifier.get_agent(uuid).passed:
            if time.monotonic() > deadline:
                raise RuntimeError('%s is not PASS: %s' % (
                    uuid, verifier.get_agent(uuid)))
            time.sleep(0.2)


def tenant_env(stack, trust_dir):
    """The private stack's tenant configuration, made an operator's."""
    from nova_vtpm.tests.functional import keylime_fixture
    keylime_fixture._edit_config(stack._conf('tenant'), {'tenant': {
        'tpm_cert_store': trust_dir, 'require_ek_cert': 'True',
        'max_retries': 5, 'retry_interval': 1}})
    return stack.env


def run(args):
    from oslo_config import cfg

    from nova_vtpm.agent import events
    from nova_vtpm.cmd import ca as ca_cmd
    from nova_vtpm import conf as nova_vtpm_conf
    from nova_vtpm.hooks import base as hooks_base
    from nova_vtpm.hooks import keylime as keylime_hook
    from nova_vtpm.hooks import manager as manager_mod
    from nova_vtpm import journal as journal_mod
    from nova_vtpm.tests.functional import agent_fixture
    from nova_vtpm.tests.functional import keylime_fixture
    from nova_vtpm.tests.functional import services
    from nova_vtpm import tpm

    keylime_fixture.require_keylime()
    n = args.agents
    work = tempfile.mkdtemp(prefix='nova-vtpm-enrol-')
    cleanups = []
    try:
        print('== Keylime 7.14 verifier + registrar, RabbitMQ, nova-vtpm '
              'agent (keylime hook)', flush=True)
        stack = keylime_fixture.KeylimeStack(quote_interval=2)
        stack.setUp()
        cleanups.append(stack.cleanUp)
        rabbit = services.RabbitMQ()
        rabbit.setUp()
        cleanups.append(rabbit.cleanUp)
        ca_dir = os.path.join(work, 'ca-compute1')
        trust_dir = os.path.join(work, 'trust')
        keylime_fixture.make_swtpm_ca(ca_dir)
        local_ca = ca_cmd.LocalCA(os.path.join(ca_dir, 'swtpm-localca.conf'))
        local_ca.create()
        os.makedirs(trust_dir)
        for name, _, pem in local_ca.certificates('compute1'):
            ca_cmd.write_atomic(os.path.join(trust_dir, name), pem)
        keylime_opts = {
            'registrar_url': stack.registrar_url,
            'verifier_url': stack.verifier_url,
            'cert_file': stack.client_cert, 'key_file': stack.client_key,
            'ca_file': stack.ca_file, 'ek_trust_dir': trust_dir,
            'failure_action': 'none'}
        agent = agent_fixture.AgentProcess(
            rabbit.url, role='controller', host='controller',
            extra={'nova_vtpm_agent': {'enabled_hooks': 'keylime'},
                   'nova_vtpm_keylime': keylime_opts})
        agent.setUp()
        cleanups.append(agent.cleanUp)
        nova = agent_fixture.NovaPublisher(rabbit.url)
        nova.setUp()
        cleanups.append(nova.cleanUp)
        print('stack %.1f s, agent pid %d' % (stack.start_times[0],
                                              agent.pid), flush=True)

        # A) reaction time.
        print('\n== A) %d servers ACTIVE (instance.create.end), then their '
              "guests' Keylime agents start" % n, flush=True)
        uuids = [str(uuidlib.uuid4()) for _ in range(n)]
        for uuid in uuids:
            nova.notify('instance.create.end', nova_payload(uuid))
        poller = Poller(stack, uuids)
        poller.start()
        guests = []
        for i, uuid in enumerate(uuids):
            guest = keylime_fixture.SwtpmGuest(
                'instance-%08x' % (i + 1), instance_uuid=uuid,
                ca_dir=ca_dir, base_dir=work)
            guest.setUp()
            cleanups.append(guest.cleanUp)
            kagent = keylime_fixture.KeylimeAgent(stack, guest,
                                                  base_dir=work)
            kagent.setUp()
            cleanups.append(kagent.cleanUp)
            guests.append((guest, kagent))
        poller.join(120)
        poller.stop.set()
        reactions = []
        print('%-36s  %12s  %12s' % ('instance', 'registered', 'reaction'))
        for uuid in uuids:
            reg = poller.registered.get(uuid)
            add = poller.added.get(uuid)
            if reg is None or add is None:
                print('%-36s  %s' % (uuid, 'NOT ADDED'))
                continue
            reactions.append(add - reg)
            first = min(poller.registered.values())
            print('%-36s  %10.2f s  %9.0f ms' % (uuid, reg - first,
                                                 ms(add - reg)))
        wait_pass(stack.verifier_client(), uuids)
        print('all %d PASS at the verifier' % n, flush=True)
        agent.stop()

        # B) the hook, in process.
        print('\n== B) enrolment by the keylime hook (in process), per '
              'agent', flush=True)
        verifier = stack.verifier_client()
        wait_gone(verifier, uuids)
        conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(conf)
        conf([], default_config_files=[])
        for key, value in keylime_opts.items():
            conf.set_override(key, value, 'nova_vtpm_keylime')
        journal = journal_mod.Journal('sqlite:///' + os.path.join(
            work, 'bench.sqlite'))
        journal.upgrade()
        hook = keylime_hook.KeylimeHook(manager_mod.HookContext(
            conf, journal, 'bench', 'controller'))
        hook_times = []
        for i, uuid in enumerate(uuids):
            event = events.InstanceEvent(
                'instance.create.end', 'boot', uuid, host='compute1',
                project_id='p1', flavor_name='vtpm.attested',
                flavor_specs=REQUIRED, timestamp=time.time())
            event.request = tpm.resolve(REQUIRED, {})
            t0 = time.perf_counter()
            try:
                hook.on_boot(event)
            except hooks_base.RetryLater as e:
                raise RuntimeError('hook did not enrol %s: %s' % (uuid, e))
            hook_times.append(time.perf_counter() - t0)
        wait_pass(verifier, uuids)

        # C) the tenant CLI.
        print('== C) enrolment by keylime_tenant -c add, per agent',
              flush=True)
        wait_gone(verifier, uuids)
        env = tenant_env(stack, trust_dir)
        tenant = stack.install.server_command('keylime_tenant')
        tenant_times = []
        for guest, kagent in guests:
            cmd = [tenant, '-c', 'add', '-u', kagent.agent_uuid,
                   '-t', services.LOOPBACK, '-tp', str(kagent.port),
                   '--tpm_policy', '{}']
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=stack.keylime_dir,
                                  capture_output=True, text=True,
                                  timeout=300)
            tenant_times.append(time.perf_counter() - t0)
            if proc.returncode:
                raise RuntimeError('%s failed (%d):\n%s%s' % (
                    ' '.join(cmd), proc.returncode, proc.stdout[-2000:],
                    proc.stderr[-2000:]))
        wait_pass(verifier, uuids)

        print('\n%-36s  %10s  %10s  %7s' % (
            'instance', 'hook', 'tenant', 'ratio'))
        for uuid, h, t in zip(uuids, hook_times, tenant_times):
            print('%-36s  %7.0f ms  %7.0f ms  %6.1fx' % (uuid, ms(h), ms(t),
                                                         t / h))
        hook_med = statistics.median(hook_times)
        tenant_med = statistics.median(tenant_times)
        ratio = tenant_med / hook_med
        print('median: hook %.0f ms, tenant %.0f ms per agent: the hook is '
              '%.1fx faster (goal >= 10x)' % (ms(hook_med), ms(tenant_med),
                                              ratio))
        if reactions:
            print('registration -> verifier add (agent process): median %.0f'
                  ' ms, max %.0f ms (goal < 1000 ms)' % (
                      ms(statistics.median(reactions)),
                      ms(max(reactions))))
        result = {
            'agents': n, 'hook_ms': [round(ms(x), 1) for x in hook_times],
            'tenant_ms': [round(ms(x), 1) for x in tenant_times],
            'ratio': round(ratio, 1),
            'reaction_ms': [round(ms(x), 1) for x in reactions]}
        if args.json:
            print(json.dumps(result))
        ok = ratio >= 10 and len(reactions) == n and max(reactions) < 1.0
        print('\n%s' % ('GOALS MET' if ok else 'GOALS NOT MET'))
        return 0 if ok else 1
    finally:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as e:   # keep cleaning up
                print('cleanup: %s' % e, file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--agents', type=int, default=5,
                        help='Number of swtpm-backed agents (default 5).')
    parser.add_argument('--json', action='store_true',
                        help='Also print the figures as JSON.')
    args = parser.parse_args(argv)
    if args.agents < 1:
        parser.error('--agents must be at least 1')
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
