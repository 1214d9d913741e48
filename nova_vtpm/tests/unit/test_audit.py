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

"""``nova-vtpm secrets audit`` with fake Barbican, virsh and Nova."""

import io
import json
import os
import time
from unittest import mock
from urllib import parse

import fixtures
from oslo_config import cfg
from oslotest import base

from nova_vtpm import audit
from nova_vtpm.cmd import cli
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm import journal as journal_mod
from nova_vtpm import secrets as secrets_mod

LIVE = '11111111-1111-4111-8111-111111111111'
GONE = '22222222-2222-4222-8222-222222222222'
ELSEWHERE = '33333333-3333-4333-8333-333333333333'
UNKNOWN = '44444444-4444-4444-8444-444444444444'
USER_GONE = '55555555-5555-4555-8555-555555555555'
USER_LIVE = '66666666-6666-4666-8666-666666666666'
MOVING = '77777777-7777-4777-8777-777777777777'
DOMAIN = '88888888-8888-4888-8888-888888888888'


class FakeResponse:

    def __init__(self, status, body=None):
        self.status_code = status
        self._body = body

    def json(self):
        if self._body is None:
            raise ValueError('no JSON')
        return self._body


class FakeBarbican:
    """The Key Manager API's secret listing and DELETE, in memory."""

    def __init__(self, names, list_status=200, delete_status=204,
                 like=True):
        self.secrets = [
            {'name': name, 'secret_ref': 'http://kms/v1/secrets/s%d' % i,
             'status': 'ACTIVE', 'created': '2026-12-0%dT00:00:00' % (
                 i % 9 + 1)} for i, name in enumerate(names)]
        self.like = like
        self.list_status = list_status
        self.delete_status = delete_status
        self.gets = []
        self.deletes = []

    def get(self, url, raise_exc=True, headers=None):
        query = dict(parse.parse_qsl(parse.urlsplit(url).query))
        self.gets.append(query)
        if self.list_status != 200:
            return FakeResponse(self.list_status, {})
        pattern = query.get('name')
        if pattern is None:
            matching = self.secrets
        elif self.like:
            assert pattern.endswith('%')
            matching = [s for s in self.secrets
                        if s['name'].startswith(pattern[:-1])]
        else:
            matching = [s for s in self.secrets if s['name'] == pattern]
        offset, limit = int(query['offset']), int(query['limit'])
        return FakeResponse(200, {'secrets': matching[offset:offset + limit],
                                  'total': len(matching)})

    def delete(self, url, raise_exc=True):
        self.deletes.append(url)
        return FakeResponse(self.delete_status)


class FakeVirsh:
    """``virsh secret-list``, ``secret-dumpxml``, ``secret-undefine``."""

    def __init__(self, secrets, domains=(), down=False):
        # {secret uuid: (usage type, usage name)}
        self.secrets = dict(secrets)
        self.domains = set(domains)
        self.down = down
        self.calls = []

    def run(self, *args):
        self.calls.append(args)
        if self.down:
            raise secrets_mod.VirshError(args[0], 'Failed to connect socket',
                                         connection=True)
        if args[0] == 'secret-list':
            return ''.join(' %s  %s %s\n' % (u, t, n) for u, (t, n) in
                           self.secrets.items()).encode()
        if args[0] == 'secret-dumpxml':
            t, n = self.secrets[args[1]]
            tag = 'name' if t in ('vtpm', 'tls') else 'volume'
            return ("<secret ephemeral='no' private='yes'><uuid>%s</uuid>"
                    "<usage type='%s'><%s>%s</%s></usage></secret>" % (
                        args[1], t, tag, n, tag)).encode()
        if args[0] == 'secret-undefine':
            del self.secrets[args[1]]
            return b''
        raise AssertionError(args)

    def domain_defined(self, uuid):
        if self.down:
            raise secrets_mod.VirshError('domstate', 'Failed to connect',
                                         connection=True)
        return uuid in self.domains


class AuditTestBase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.url = 'sqlite:///' + os.path.join(self.tmp, 'j.sqlite')
        self.root = os.path.join(self.tmp, 'swtpm')
        os.mkdir(self.root)
        self.conf_file = os.path.join(self.tmp, 'nova.conf')
        with open(self.conf_file, 'w') as f:
            f.write('[nova_vtpm_journal]\nconnection = %s\n'
                    '[nova_vtpm_state]\nstate_root = %s\n'
                    'libvirt_uri = test:///nowhere\n'
                    '[nova_vtpm_agent]\nhost = cmp1\n' % (self.url,
                                                          self.root))
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf(['--config-file', self.conf_file],
                  default_config_files=[])
        self.journal = journal_mod.Journal(self.url)
        self.journal.upgrade()
        now = time.time()
        put = self.journal.put_instance
        put(LIVE, host='cmp1', vtpm_version='2.0', secret_security='host')
        put(GONE, host='cmp1', vtpm_version='2.0', secret_security='host',
            deleted_at=now)
        put(ELSEWHERE, host='cmp2', vtpm_version='2.0',
            secret_security='host')
        put(USER_GONE, host='cmp2', vtpm_version='2.0',
            secret_security='user', project_id='tenant-a', deleted_at=now)
        put(USER_LIVE, host='cmp2', vtpm_version='2.0',
            secret_security='user', project_id='tenant-b')
        put(MOVING, host='cmp1', vtpm_version='2.0', secret_security='host',
            task_state='migrating')
        self.clients = mock.Mock(configured=True)
        access = self.clients.session.return_value.auth.get_access
        access.return_value = mock.Mock(project_id='pid',
                                        project_name='service',
                                        username='nova-vtpm')
        # Nova unreachable unless a test says otherwise.
        self.clients.nova.side_effect = ConnectionError('no Nova')

    def auditor(self, barbican=None, virsh=None, **kwargs):
        a = audit.Auditor(self.conf, self.journal, self.clients, 'cmp1',
                          virsh=virsh or FakeVirsh({}), **kwargs)
        if barbican is not None:
            a._barbican = barbican
        return a

    @staticmethod
    def by_instance(report, kind):
        return {f.instance_uuid: f for f in report.findings
                if f.kind == kind}


class InstancesTest(AuditTestBase):

    def test_journal(self):
        inst = audit.instances_from_journal(self.journal)
        self.assertFalse(inst.authoritative)
        c = inst.classify
        self.assertEqual(audit.IN_USE, c(LIVE, 'cmp1')[0])
        self.assertEqual(audit.ORPHAN, c(GONE, 'cmp1')[0])
        status, reason = c(ELSEWHERE, 'cmp1')
        self.assertEqual(audit.ORPHAN, status)
        self.assertIn('lives on cmp2', reason)
        self.assertEqual(audit.UNKNOWN, c(UNKNOWN, 'cmp1')[0])
        self.assertEqual(audit.IN_FLUX, c(MOVING, 'cmp1')[0])
        self.assertEqual(audit.IN_USE, c(LIVE.upper(), 'cmp1')[0])

    def test_nova_is_authoritative_and_paginated(self):
        def srv(uuid, host, specs=None, task=None, status='ACTIVE'):
            s = mock.Mock(id=uuid)
            s.to_dict.return_value = {
                'id': uuid, 'OS-EXT-SRV-ATTR:host': host,
                'OS-EXT-STS:task_state': task, 'status': status,
                'tenant_id': 'p', 'flavor': {'extra_specs': specs or {}}}
            return s
        self.conf.set_override('page_size', 2, 'nova_vtpm_nova')
        pages = [[srv(LIVE, 'cmp1', {'hw:tpm_version': '2.0'}),
                  srv(USER_LIVE, 'cmp2', {'hw:tpm_version': '2.0'})],
                 [srv(MOVING, 'cmp1', task='resize_migrating',
                      status='RESIZE')]]
        nova = mock.Mock()
        nova.servers.list.side_effect = pages
        self.clients.nova.side_effect = None
        self.clients.nova.return_value = nova
        inst = audit.instances_from_nova(self.conf, self.clients,
                                         self.journal)
        self.assertTrue(inst.authoritative)
        self.assertEqual(2, nova.servers.list.call_count)
        self.assertEqual(USER_LIVE,
                         nova.servers.list.call_args_list[1][1]['marker'])
        self.assertEqual({'all_tenants': True},
                         nova.servers.list.call_args[1]['search_opts'])
        self.assertEqual(audit.ORPHAN, inst.classify(UNKNOWN, 'cmp1')[0])
        self.assertEqual(audit.ORPHAN, inst.classify(ELSEWHERE, 'cmp1')[0])
        self.assertEqual(audit.IN_FLUX, inst.classify(MOVING, 'cmp1')[0])
        self.assertEqual('user', inst.modes[USER_LIVE])
        self.assertEqual('user', inst.modes[USER_GONE])   # from the journal


class BarbicanTest(AuditTestBase):

    def names(self, *uuids):
        return [secrets_mod.barbican_secret_name(u) for u in uuids]

    def test_orphans_found_and_fixed(self):
        kms = FakeBarbican(self.names(LIVE, GONE, UNKNOWN, MOVING) + [
            'vTPM secret for instance %s (copy)' % GONE, 'unrelated'])
        report = self.auditor(kms, sections=['barbican']).run()
        found = self.by_instance(report, 'barbican')
        self.assertEqual(audit.IN_USE, found[LIVE].status)
        self.assertEqual(audit.ORPHAN, found[GONE].status)
        self.assertEqual(audit.UNKNOWN, found[UNKNOWN].status)
        self.assertEqual(audit.IN_FLUX, found[MOVING].status)
        self.assertEqual(audit.NOT_VISIBLE, found[USER_GONE].status)
        self.assertNotIn(USER_LIVE, found)
        self.assertEqual('s1', found[GONE].ident)
        self.assertEqual([], kms.deletes)
        self.assertFalse(report.ok)
        self.assertEqual(1, len(report.remaining_orphans))
        self.assertIn('journal inventory', report.warnings[0])
        self.assertIn('Nova is unreachable (ConnectionError: no Nova)',
                      report.warnings[0])
        self.assertIn('scoped to (service, pid)', report.notes[0])
        self.assertIn(audit.NOT_VISIBLE_TEXT, report.notes[0] + ''.join(
            report.notes))
        self.assertIn('1 live server(s) in user mode', report.notes[1])
        self.assertIn(audit.NOT_VISIBLE_TEXT, found[USER_GONE].reason)
        self.assertIn('tenant-a', found[USER_GONE].reason)

        report = self.auditor(kms, sections=['barbican']).run(fix=True)
        found = self.by_instance(report, 'barbican')
        self.assertEqual('removed', found[GONE].action)
        self.assertEqual(['/v1/secrets/s1'], kms.deletes)
        self.assertTrue(report.ok)

    def test_pagination(self):
        uuids = ['%08d-0000-4000-8000-000000000000' % i for i in range(250)]
        kms = FakeBarbican(self.names(*uuids))
        report = self.auditor(kms, sections=['barbican']).run()
        self.assertEqual(['0', '100', '200'],
                         [q['offset'] for q in kms.gets])
        self.assertEqual({'vTPM secret for instance %'},
                         {q['name'] for q in kms.gets})
        self.assertEqual(250, sum(1 for f in report.findings
                                  if f.status == audit.UNKNOWN))

    def test_exact_name_matching_barbican(self):
        kms = FakeBarbican(self.names(GONE) + ['other'] * 150, like=False)
        report = self.auditor(kms, sections=['barbican']).run()
        self.assertEqual(['vTPM secret for instance %', None, None],
                         [q.get('name') for q in kms.gets])
        self.assertEqual([GONE], [f.instance_uuid for f in report.findings
                                  if f.status == audit.ORPHAN])

    def test_delete_refused(self):
        kms = FakeBarbican(self.names(GONE), delete_status=403)
        report = self.auditor(kms, sections=['barbican']).run(fix=True)
        (finding,) = [f for f in report.findings if f.instance_uuid == GONE]
        self.assertEqual('failed: Barbican DELETE answered HTTP 403',
                         finding.action)
        self.assertFalse(report.ok)

    def test_listing_refused(self):
        kms = FakeBarbican([], list_status=403)
        report = self.auditor(kms, sections=['barbican']).run()
        self.assertIn('refuses to list secrets', report.errors['barbican'])
        self.assertFalse(report.ok)

    def test_not_configured(self):
        self.clients.configured = False
        report = self.auditor(FakeBarbican([]), sections=['barbican']).run()
        self.assertIn('Barbican not audited', report.notes[0])
        self.assertIn('Nova is not configured', report.warnings[0])
        self.assertTrue(report.ok)

    def test_nova_source(self):
        nova = mock.Mock()
        s = mock.Mock(id=LIVE)
        s.to_dict.return_value = {'id': LIVE,
                                  'OS-EXT-SRV-ATTR:host': 'cmp1'}
        nova.servers.list.return_value = [s]
        self.clients.nova.side_effect = None
        self.clients.nova.return_value = nova
        kms = FakeBarbican(self.names(LIVE, UNKNOWN))
        report = self.auditor(kms, sections=['barbican']).run(fix=True)
        self.assertEqual('nova', report.instance_source)
        self.assertEqual([], report.warnings)
        found = self.by_instance(report, 'barbican')
        # Not in Nova: gone, even though the journal never heard of it.
        self.assertEqual(audit.ORPHAN, found[UNKNOWN].status)
        self.assertEqual('removed', found[UNKNOWN].action)
        self.assertEqual(audit.IN_USE, found[LIVE].status)


class LibvirtTest(AuditTestBase):

    def test_orphans(self):
        virsh = FakeVirsh({
            'a0000000-0000-4000-8000-000000000001': ('vtpm', LIVE),
            'a0000000-0000-4000-8000-000000000002': ('vtpm', GONE),
            'a0000000-0000-4000-8000-000000000003': ('vtpm', ELSEWHERE),
            'a0000000-0000-4000-8000-000000000004': ('vtpm', UNKNOWN),
            'a0000000-0000-4000-8000-000000000005': ('vtpm', 'my-secret'),
            'a0000000-0000-4000-8000-000000000006': ('volume', '/v/x'),
            'a0000000-0000-4000-8000-000000000007': ('vtpm', DOMAIN),
        }, domains=[DOMAIN])
        self.journal.put_instance(DOMAIN, host='cmp9', vtpm_version='2.0',
                                  deleted_at=time.time())
        report = self.auditor(virsh=virsh, sections=['libvirt']).run()
        found = self.by_instance(report, 'libvirt')
        self.assertEqual(audit.IN_USE, found[LIVE].status)
        self.assertEqual(audit.ORPHAN, found[GONE].status)
        self.assertEqual(audit.ORPHAN, found[ELSEWHERE].status)
        self.assertEqual(audit.UNKNOWN, found[UNKNOWN].status)
        self.assertEqual(audit.IN_USE, found[DOMAIN].status)
        self.assertIn('domain', found[DOMAIN].reason)
        self.assertEqual(audit.NOT_NOVA, found[None].status)
        self.assertEqual(6, len(report.findings))   # not the volume one
        report = self.auditor(virsh=virsh, sections=['libvirt']).run(
            fix=True)
        self.assertEqual(
            {'a0000000-0000-4000-8000-000000000002',
             'a0000000-0000-4000-8000-000000000003'},
            {f.ident for f in report.findings if f.action == 'removed'})
        self.assertNotIn('a0000000-0000-4000-8000-000000000002',
                         virsh.secrets)
        self.assertIn('a0000000-0000-4000-8000-000000000001', virsh.secrets)
        self.assertTrue(report.ok)
        # Never read a value.
        self.assertNotIn('secret-get-value', [c[0] for c in virsh.calls])

    def test_libvirt_down(self):
        report = self.auditor(virsh=FakeVirsh({}, down=True),
                              sections=['libvirt']).run()
        self.assertIn('libvirt cannot be reached', report.errors['libvirt'])
        self.assertFalse(report.ok)


class StateDirTest(AuditTestBase):

    def make(self, name, files=('tpm2/tpm2-00.permall',)):
        path = os.path.join(self.root, name)
        for f in files:
            os.makedirs(os.path.dirname(os.path.join(path, f)),
                        exist_ok=True)
            with open(os.path.join(path, f), 'wb') as fh:
                fh.write(b'x')
        os.makedirs(path, exist_ok=True)
        return path

    def test_orphans(self):
        for name in (LIVE, GONE, ELSEWHERE, UNKNOWN, MOVING, DOMAIN,
                     'not-a-uuid'):
            self.make(name)
        os.symlink(self.root, os.path.join(
            self.root, '99999999-9999-4999-8999-999999999999'))
        self.journal.put_instance(DOMAIN, host='cmp9', deleted_at=1.0)
        virsh = FakeVirsh({}, domains=[DOMAIN])
        report = self.auditor(virsh=virsh, sections=['state_dir']).run()
        found = self.by_instance(report, 'state_dir')
        self.assertEqual(
            {LIVE: audit.IN_USE, GONE: audit.ORPHAN,
             ELSEWHERE: audit.ORPHAN, UNKNOWN: audit.UNKNOWN,
             MOVING: audit.IN_FLUX, DOMAIN: audit.IN_USE},
            {u: f.status for u, f in found.items()})
        self.assertEqual(1, found[GONE].details['files'])
        with mock.patch.object(audit.state_mod, 'state_in_use',
                               side_effect=lambda p: ELSEWHERE in p):
            report = self.auditor(virsh=virsh, sections=['state_dir']).run(
                fix=True)
        found = self.by_instance(report, 'state_dir')
        self.assertEqual('removed', found[GONE].action)
        self.assertEqual(audit.IN_USE, found[ELSEWHERE].status)
        self.assertIn('swtpm holds the lock', found[ELSEWHERE].reason)
        self.assertEqual(
            sorted([LIVE, ELSEWHERE, UNKNOWN, MOVING, DOMAIN, 'not-a-uuid',
                    '99999999-9999-4999-8999-999999999999']),
            sorted(os.listdir(self.root)))
        self.assertTrue(report.ok)

    def test_libvirt_down_removes_nothing(self):
        self.make(GONE)
        report = self.auditor(virsh=FakeVirsh({}, down=True),
                              sections=['state_dir']).run(fix=True)
        (finding,) = report.findings
        self.assertEqual(audit.UNKNOWN, finding.status)
        self.assertIsNone(finding.action)
        self.assertTrue(os.path.isdir(os.path.join(self.root, GONE)))
        self.assertIn('none is removed', report.warnings[-1])

    def test_no_root(self):
        os.rmdir(self.root)
        report = self.auditor(sections=['state_dir']).run()
        self.assertIn('does not exist', report.notes[0])
        self.assertTrue(report.ok)


class CommandTest(AuditTestBase):

    def cli(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with mock.patch('sys.stdout', out), mock.patch('sys.stderr', err):
            try:
                rc = cli.main(['--config-file', self.conf_file, 'secrets',
                               'audit'] + list(args))
            except SystemExit as e:
                rc = e.code
        return rc, out.getvalue(), err.getvalue()

    def test_state_dirs_through_the_command(self):
        for name in (LIVE, GONE):
            os.makedirs(os.path.join(self.root, name, 'tpm2'))
        with mock.patch.object(secrets_mod.Virsh, 'domain_defined',
                               return_value=False):
            rc, out, _ = self.cli('--only', 'state_dir')
            self.assertEqual(1, rc, out)
            self.assertIn('instances from journal', out)
            self.assertIn('warning: Nova is not configured', out)
            self.assertIn(GONE, out)
            self.assertNotIn(LIVE, out)
            self.assertIn('1 orphan(s): run with --fix', out)
            rc, out, _ = self.cli('--only', 'state_dir', '--all',
                                  '--format', 'json')
            data = json.loads(out)
            self.assertEqual({'state_dir:in-use': 1, 'state_dir:orphan': 1},
                             data['counts'])
            rc, out, _ = self.cli('--only', 'state_dir', '--fix')
            self.assertEqual(0, rc, out)
            self.assertIn('Removed 1 orphan(s); 0 left.', out)
        self.assertEqual([LIVE], os.listdir(self.root))
        rc, _, err = self.cli('--only', 'nonsense')
        self.assertEqual(2, rc)
        rc, _, err = self.cli('--instances-from', 'nova')
        self.assertEqual(2, rc)
        self.assertIn('Nova is not configured', err)
