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

"""``nova-vtpm secrets audit`` on a real Keystone + Barbican and libvirt.

Barbican (:class:`~openstack_fixture.KeystoneBarbican`): Nova's service
user (``nova``, member of the ``service`` project) stores ``deployment``
mode secrets exactly as Nova does (``vTPM secret for instance <uuid>``, a
base64 passphrase) for a live instance and for a deleted one; a tenant's
user stores a ``user`` mode secret in the tenant's project, as Nova does
with the owner's token, for an instance that was deleted. nova-vtpm's
service user is a member of the ``service`` project.

libvirt (:class:`~libvirt_fixture.Libvirt`, a private libvirtd): ``host``
mode ``vtpm`` secrets (persistent, usage name = instance uuid, as Nova
defines them) and state directories:

* a live instance: its secret and a state directory;
* a deleted one: a real domain started once (libvirt made its encrypted
  state), destroyed and undefined with ``--keep-tpm``: its state
  directory and its secret are left behind;
* a domain the journal says is deleted but that still RUNS here: its
  secret and state (locked by its swtpm) must be left alone.

Nova: not run here (an in-process Nova is not cheap to reach from a
separate CLI process). Instance existence comes from the journal
inventory: the live instances are recorded live on this host, the deleted
ones recorded deleted, exactly as the inventory hook does. The command is
run with the service credentials configured and no compute endpoint in
the catalog, so it tries Nova, cannot reach it, falls back to the journal
and says so.
"""

import base64
import json
import os
import subprocess
import sys
import time
import uuid as uuidlib

import fixtures
from oslotest import base
from testtools import content

from nova_vtpm import journal as journal_mod
from nova_vtpm.tests.functional import libvirt_fixture
from nova_vtpm.tests.functional import openstack_fixture

HOST = 'audit-host'
NOT_VISIBLE = 'not visible to the service user (user mode secrets)'


def store_vtpm_secret(session, barbican_url, instance_uuid):
    """Store a vTPM passphrase as Nova does (castellan -> Barbican).

    Returns (secret ref, passphrase); ``log=False`` keeps the payload out
    of keystoneauth's debug log.
    """
    passphrase = base64.b64encode(os.urandom(384))
    resp = session.post(barbican_url + '/v1/secrets/', log=False, json={
        'name': 'vTPM secret for instance %s' % instance_uuid,
        'secret_type': 'passphrase',
        'payload': base64.b64encode(passphrase).decode(),
        'payload_content_type': 'application/octet-stream',
        'payload_content_encoding': 'base64',
    }, raise_exc=False)
    assert resp.status_code == 201, resp.text
    return resp.json()['secret_ref'], passphrase


class SecretsAuditTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest('needs root (libvirtd)')
        missing = libvirt_fixture.missing_binaries()
        if missing:
            self.skipTest('missing: %s' % ', '.join(missing))
        self.timings = {}
        self.addCleanup(lambda: self.addDetail(
            'timings', content.text_content(json.dumps(
                {k: round(v, 2) for k, v in self.timings.items()}))))
        t0 = time.monotonic()
        self.os = openstack_fixture.KeystoneBarbican()
        self.os.setUp()
        self.addCleanup(self.os.cleanUp)
        self.timings['keystone_barbican_up'] = time.monotonic() - t0
        t0 = time.monotonic()
        self.libvirt = libvirt_fixture.Libvirt()
        self.libvirt.setUp()
        self.addCleanup(self.libvirt.cleanUp)
        self.timings['libvirt_up'] = time.monotonic() - t0
        self.tmp = self.useFixture(fixtures.TempDir()).path

    # -- helpers ---------------------------------------------------------

    def write_conf(self, user):
        url = 'sqlite:///' + os.path.join(self.tmp, 'journal.sqlite')
        path = os.path.join(self.tmp, 'nova-vtpm.conf')
        with open(path, 'w') as f:
            f.write(
                '[nova_vtpm_agent]\nhost = %(host)s\n'
                '[nova_vtpm_journal]\nconnection = %(url)s\n'
                '[nova_vtpm_state]\nstate_root = %(root)s\n'
                'libvirt_uri = %(uri)s\n'
                '[nova_vtpm_service]\nauth_type = password\n'
                'auth_url = %(auth)s\nusername = %(user)s\n'
                'password = %(password)s\nproject_name = %(project)s\n'
                'user_domain_id = default\nproject_domain_id = default\n' % {
                    'host': HOST, 'url': url,
                    'root': self.libvirt.host_path(
                        libvirt_fixture.SWTPM_STORAGE_DIR),
                    'uri': self.libvirt.uri, 'auth': self.os.keystone_url,
                    'user': user['name'], 'password': user['password'],
                    'project': user['project_name']})
        self.conf_file = path
        self.journal = journal_mod.Journal(url)
        self.journal.upgrade()
        self.addCleanup(self.journal.engine.dispose)

    def audit(self, *args):
        cmd = [os.path.join(os.path.dirname(sys.executable), 'nova-vtpm')]
        if not os.access(cmd[0], os.X_OK):
            cmd = [sys.executable, '-m', 'nova_vtpm.cmd.cli']
        t0 = time.monotonic()
        proc = subprocess.run(
            cmd + ['--config-file', self.conf_file, 'secrets', 'audit'] +
            list(args), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=120)
        took = time.monotonic() - t0
        self.addDetail('audit %s' % ' '.join(args), content.text_content(
            '%.2f s, exit %d\n%s\n%s' % (took, proc.returncode,
                                         proc.stdout[-20000:],
                                         proc.stderr[-5000:])))
        return proc, took

    def audit_json(self, *args):
        proc, took = self.audit('--format', 'json', *args)
        self.assertIn(proc.returncode, (0, 1), proc.stderr)
        return proc.returncode, json.loads(proc.stdout), took

    @staticmethod
    def findings(report, kind):
        return {f['instance']: f for f in report['findings']
                if f['kind'] == kind}

    def vtpm_secret(self, instance_uuid):
        """A host-mode libvirt secret as Nova defines it."""
        secret_uuid = str(uuidlib.uuid4())
        self.libvirt.define_vtpm_secret(
            secret_uuid, base64.b64encode(os.urandom(384)),
            usage_name=instance_uuid, private=False)
        return secret_uuid

    def libvirt_secrets(self):
        out = self.libvirt.virsh('secret-list').stdout
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def wait_for_state(self, instance_uuid):
        permall = os.path.join(self.libvirt.swtpm_tpm2_dir(instance_uuid),
                               'tpm2-00.permall')
        deadline = time.monotonic() + 30
        while not os.path.exists(permall) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertTrue(os.path.exists(permall))

    # -- the test ----------------------------------------------------------

    def test_audit_barbican_libvirt_and_state_dirs(self):
        ks = self.os
        t0 = time.monotonic()
        # Nova's service project (the fixture's 'service' one is
        # Barbican's own).
        service = ks.create_project()
        nova_user = ks.create_user(project=service,
                                   roles=('member', 'service'))
        vtpm_user = ks.create_user(project=service, roles=('member',))
        owner = ks.create_user(roles=('member',))       # a tenant
        nova = ks.make_session(nova_user)
        tenant = ks.make_session(owner)
        service_session = ks.make_session(vtpm_user)
        self.write_conf(vtpm_user)

        live_d, gone_d, user_gone = (str(uuidlib.uuid4()) for _ in range(3))
        live_ref, _ = store_vtpm_secret(nova, ks.barbican_url, live_d)
        gone_ref, _ = store_vtpm_secret(nova, ks.barbican_url, gone_d)
        user_ref, _ = store_vtpm_secret(tenant, ks.barbican_url, user_gone)

        live_h, gone_h, stale_h = (str(uuidlib.uuid4()) for _ in range(3))
        live_secret = self.vtpm_secret(live_h)
        os.makedirs(self.libvirt.swtpm_tpm2_dir(live_h), mode=0o700)
        # A deleted instance whose state and secret were left behind.
        gone_secret = self.vtpm_secret(gone_h)
        self.libvirt.define_vtpm_domain('gone', gone_h, gone_secret)
        self.libvirt.start('gone')
        self.wait_for_state(gone_h)
        self.libvirt.destroy('gone')
        self.libvirt.undefine('gone', keep_tpm=True)
        # A "deleted" instance whose domain still runs here.
        stale_secret = self.vtpm_secret(stale_h)
        self.libvirt.define_vtpm_domain('stale', stale_h, stale_secret)
        self.libvirt.start('stale')
        self.wait_for_state(stale_h)
        self.timings['scenario_setup'] = time.monotonic() - t0

        # The inventory, as the inventory hook records it.
        now = time.time()
        put = self.journal.put_instance
        put(live_d, host='elsewhere', vtpm_version='2.0',
            secret_security='deployment', project_id=service['id'])
        put(gone_d, host='elsewhere', vtpm_version='2.0',
            secret_security='deployment', project_id=service['id'],
            deleted_at=now)
        put(user_gone, host='elsewhere', vtpm_version='2.0',
            secret_security='user', project_id=owner['project_id'],
            deleted_at=now)
        put(live_h, host=HOST, vtpm_version='2.0', secret_security='host')
        put(gone_h, host=HOST, vtpm_version='2.0', secret_security='host',
            deleted_at=now)
        put(stale_h, host=HOST, vtpm_version='2.0', secret_security='host',
            deleted_at=now)

        # The service user cannot see (nor read) the user mode secret.
        listed = service_session.get(
            ks.barbican_url + '/v1/secrets', params={
                'name': 'vTPM secret for instance %s' % user_gone}).json()
        self.assertEqual(0, listed['total'])
        self.assertIn(service_session.get(
            user_ref + '/payload', raise_exc=False, log=False,
            headers={'Accept': 'application/octet-stream'}).status_code,
            (403, 404))

        # -- report only --------------------------------------------------
        rc, report, took = self.audit_json()
        self.timings['audit_report'] = took
        self.assertEqual(1, rc, report)
        self.assertEqual('journal', report['instance_source'])
        self.assertIn('Nova is unreachable', report['warnings'][0])
        self.assertIn('journal inventory', report['warnings'][0])
        self.assertEqual({}, report['errors'])
        self.assertEqual(service['id'],
                         report['barbican_scope']['project_id'])
        self.assertTrue(any('not visible to the service user' in n
                            for n in report['notes']))

        kms = self.findings(report, 'barbican')
        self.assertEqual('in-use', kms[live_d]['status'])
        self.assertEqual(live_ref.rsplit('/', 1)[1], kms[live_d]['id'])
        self.assertEqual('orphan', kms[gone_d]['status'])
        self.assertEqual(gone_ref.rsplit('/', 1)[1], kms[gone_d]['id'])
        self.assertEqual('not-visible', kms[user_gone]['status'])
        self.assertIn(NOT_VISIBLE, kms[user_gone]['reason'])
        self.assertIn(owner['project_id'], kms[user_gone]['reason'])

        lv = self.findings(report, 'libvirt')
        self.assertEqual(('in-use', live_secret),
                         (lv[live_h]['status'], lv[live_h]['id']))
        self.assertEqual(('orphan', gone_secret),
                         (lv[gone_h]['status'], lv[gone_h]['id']))
        self.assertEqual('in-use', lv[stale_h]['status'])
        self.assertIn('domain', lv[stale_h]['reason'])

        dirs = self.findings(report, 'state_dir')
        self.assertEqual('in-use', dirs[live_h]['status'])
        self.assertEqual('orphan', dirs[gone_h]['status'])
        self.assertGreaterEqual(dirs[gone_h]['details']['files'], 1)
        self.assertEqual('in-use', dirs[stale_h]['status'])
        self.assertEqual(3, report['remaining_orphans'])
        # Never a secret value: not even the names of the fields.
        self.assertNotIn('payload', json.dumps(report))

        # The table says the same, and the user mode case in words.
        proc, _ = self.audit()
        self.assertEqual(1, proc.returncode)
        self.assertIn(NOT_VISIBLE, proc.stdout)
        self.assertIn('3 orphan(s): run with --fix', proc.stdout)

        # -- fix ----------------------------------------------------------
        rc, report, took = self.audit_json('--fix')
        self.timings['audit_fix'] = took
        self.assertEqual(0, rc, report)
        fixed = {(f['kind'], f['instance']): f['action']
                 for f in report['findings'] if f['action']}
        self.assertEqual({('barbican', gone_d): 'removed',
                          ('libvirt', gone_h): 'removed',
                          ('state_dir', gone_h): 'removed'}, fixed)
        # The fixture no longer owns the secret the audit removed.
        self.libvirt.secrets.remove(gone_secret)

        # Barbican: the orphan is gone, the live one and the user mode
        # one (out of reach) stay.
        self.assertEqual(404, nova.get(gone_ref, raise_exc=False)
                         .status_code)
        self.assertEqual(200, nova.get(live_ref, raise_exc=False)
                         .status_code)
        self.assertEqual(200, tenant.get(user_ref, raise_exc=False)
                         .status_code)
        # libvirt: only the orphan's secret and directory are gone.
        secrets = self.libvirt_secrets()
        self.assertNotIn(gone_secret, secrets)
        self.assertIn(live_secret, secrets)
        self.assertIn(stale_secret, secrets)
        self.assertFalse(os.path.exists(
            self.libvirt.swtpm_state_dir(gone_h)))
        self.assertTrue(os.path.isdir(self.libvirt.swtpm_tpm2_dir(live_h)))
        self.assertTrue(os.path.exists(os.path.join(
            self.libvirt.swtpm_tpm2_dir(stale_h), 'tpm2-00.permall')))
        self.assertEqual('running', self.libvirt.domain_state('stale'))

        # Nothing left to do.
        rc, report, _ = self.audit_json()
        self.assertEqual(0, rc, report)
        self.assertEqual(0, report['remaining_orphans'])
