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

"""The Keylime REST clients, against requests-mock."""

import base64
import json

import fixtures
from oslo_config import cfg
from oslotest import base
import requests
from requests_mock.contrib import fixture as rm_fixture
import urllib3

from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm import exception
from nova_vtpm.keylime import client

REG = 'https://registrar.example:8891'
VER = 'https://verifier.example:8881'
AGENT = 'd432fbb3-d2f1-4a97-9ef7-75bd81c00000'
VERSION = {'code': 200, 'status': 'Success', 'results': {
    'current_version': '2.6',
    'supported_versions': ['1.0', '2.0', '2.1', '2.2', '2.3', '2.4', '2.5',
                           '2.6', '3.0']}}
REGISTRAR_AGENT = {
    'agent_id': AGENT, 'ek_tpm': 'RUtUUE0=', 'ekcert': 'Q0VSVA==',
    'aik_tpm': 'QUlLVFBN', 'ip': '10.0.0.5', 'port': 9002,
    'mtls_cert': '-----BEGIN CERTIFICATE-----\nMTLS\n', 'regcount': 1}


def ok(results=None):
    return {'json': {'code': 200, 'status': 'Success',
                     'results': results if results is not None else {}},
            'status_code': 200}


def err(status, message):
    return {'json': {'code': status, 'status': message, 'results': {}},
            'status_code': status}


class _Base(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.mock = self.useFixture(rm_fixture.Fixture())
        self.sleeps = []
        self.mock.get(REG + '/version', **{'json': VERSION})
        self.mock.get(VER + '/version', **{'json': VERSION})
        self.logger = self.useFixture(fixtures.FakeLogger(level='DEBUG'))

    def registrar(self, **kwargs):
        options = dict(cert_file='/etc/c.pem', key_file='/etc/k.pem',
                       ca_file='/etc/ca.pem', sleep=self.sleeps.append)
        options.update(kwargs)
        return client.RegistrarClient(REG, **options)

    def verifier(self, **kwargs):
        options = dict(cert_file='/etc/c.pem', key_file='/etc/k.pem',
                       ca_file='/etc/ca.pem', sleep=self.sleeps.append)
        options.update(kwargs)
        return client.VerifierClient(VER, **options)


class NegotiationTest(_Base):

    def test_negotiate_version(self):
        self.assertEqual('2.6', client.negotiate_version(
            ['1.0', '2.0', '2.1', '2.6', '3.0']))
        self.assertEqual('2.3', client.negotiate_version(['2.3', '2.10']))
        self.assertEqual('2.1', client.negotiate_version(['2.1', 'x.y']))
        self.assertIsNone(client.negotiate_version(['1.0', '2.0', '3.0']))
        self.assertIsNone(client.negotiate_version([]))
        self.assertIsNone(client.negotiate_version(None))

    def test_highest_common_version_is_used(self):
        self.mock.get(REG + '/v2.6/agents/' + AGENT, **ok(REGISTRAR_AGENT))
        registrar = self.registrar()
        registrar.get_agent(AGENT)
        self.assertEqual('2.6', registrar.api_version)
        # Negotiated once.
        registrar.get_agent(AGENT)
        self.assertEqual(1, sum(1 for r in self.mock.request_history
                                if r.path == '/version'))

    def test_older_keylime(self):
        self.mock.get(VER + '/version', json={'results': {
            'current_version': '2.1', 'supported_versions': ['1.0', '2.0',
                                                             '2.1']}})
        self.assertEqual('2.1', self.verifier().api_version)

    def test_only_current_version(self):
        self.mock.get(VER + '/version',
                      json={'results': {'current_version': '2.4'}})
        self.assertEqual('2.4', self.verifier().api_version)

    def test_no_common_version(self):
        self.mock.get(VER + '/version', json={'results': {
            'current_version': '3.0', 'supported_versions': ['3.0']}})
        e = self.assertRaises(client.KeylimeVersionError,
                              lambda: self.verifier().api_version)
        self.assertIn('it supports 3.0', str(e))
        self.assertIn('2.1, 2.2', str(e))


class TLSTest(_Base):

    def test_tls_material_is_passed(self):
        self.mock.get(REG + '/v2.6/agents/', **ok({'uuids': []}))
        self.registrar().list_agents()
        last = self.mock.last_request
        self.assertEqual('/etc/ca.pem', last.verify)
        self.assertEqual(('/etc/c.pem', '/etc/k.pem'), last.cert)

    def test_system_cas_when_no_ca_file(self):
        self.mock.get(REG + '/v2.6/agents/', **ok({'uuids': []}))
        self.registrar(ca_file=None, key_file=None).list_agents()
        # True, or the bundle requests substitutes for it: never off.
        verify = self.mock.last_request.verify
        self.assertTrue(verify is True or isinstance(verify, str), verify)
        self.assertEqual('/etc/c.pem', self.mock.last_request.cert)

    def test_plain_http_is_refused(self):
        for url in ('http://registrar:8890', 'registrar:8891', '', None):
            e = self.assertRaises(client.KeylimeConfigError,
                                  client.RegistrarClient, url)
            self.assertIsInstance(e, exception.ConfigError)
            self.assertIn('https://<host>:<port>', str(e))

    def test_key_without_cert(self):
        self.assertRaises(client.KeylimeConfigError, client.RegistrarClient,
                          REG, key_file='/k.pem')

    def test_key_password(self):
        registrar = self.registrar(key_password='s3cret')
        adapter = registrar.session.get_adapter(REG)
        self.assertIsInstance(adapter, client._KeyPasswordAdapter)
        self.assertEqual('s3cret',
                         adapter.poolmanager.connection_pool_kw[
                             'key_password'])

    def test_tls_failure_is_not_retried(self):
        self.mock.get(REG + '/v2.6/agents/' + AGENT,
                      exc=requests.exceptions.SSLError('certificate verify '
                                                       'failed'))
        e = self.assertRaises(client.KeylimeTLSError,
                              self.registrar().get_agent, AGENT)
        self.assertIn('certificate verify failed', str(e))
        self.assertIn('ca_file', str(e))
        self.assertEqual([], self.sleeps)


class RetryTest(_Base):

    def test_5xx_then_success(self):
        self.mock.get(REG + '/v2.6/agents/' + AGENT, [
            err(503, 'Service Unavailable'), err(500, 'boom'),
            ok(REGISTRAR_AGENT)])
        agent = self.registrar().get_agent(AGENT)
        self.assertEqual(AGENT, agent.agent_id)
        self.assertEqual([0.5, 1.0], self.sleeps)

    def test_persistent_5xx(self):
        self.mock.get(REG + '/v2.6/agents/' + AGENT,
                      **err(500, 'Internal server error'))
        e = self.assertRaises(client.KeylimeUnavailable,
                              self.registrar(retries=3).get_agent, AGENT)
        self.assertEqual([0.5, 1.0, 2.0], self.sleeps)
        self.assertIn('after 4 attempt(s)', str(e))
        self.assertIn('HTTP 500: Internal server error', str(e))
        self.assertIn('tried again later', str(e))

    def test_connection_errors(self):
        self.mock.get(REG + '/v2.6/agents/' + AGENT, [
            {'exc': requests.exceptions.ConnectionError('refused')},
            {'exc': requests.exceptions.ReadTimeout('slow')},
            ok(REGISTRAR_AGENT)])
        self.registrar().get_agent(AGENT)
        self.assertEqual(2, len(self.sleeps))

    def test_unreachable(self):
        self.mock.get(REG + '/version',
                      exc=requests.exceptions.ConnectionError('refused'))
        e = self.assertRaises(client.KeylimeUnavailable,
                              self.registrar(retries=1).get_agent, AGENT)
        self.assertIn('registrar at %s' % REG, str(e))
        self.assertIn('refused', str(e))

    def test_backoff_is_bounded(self):
        self.mock.get(REG + '/v2.6/agents/', **err(502, 'bad gateway'))
        self.assertRaises(client.KeylimeUnavailable,
                          self.registrar(retries=8, retry_backoff=4)
                          .list_agents)
        self.assertEqual([4, 8, 16, 30, 30, 30, 30, 30], self.sleeps)

    def test_no_retries(self):
        self.mock.get(REG + '/v2.6/agents/', **err(503, 'down'))
        self.assertRaises(client.KeylimeUnavailable,
                          self.registrar(retries=0).list_agents)
        self.assertEqual([], self.sleeps)

    def _post(self, responses):
        self.mock.post(VER + '/v2.6/agents/' + AGENT, responses)
        return lambda: self.verifier().add_agent(
            AGENT, client.RegistrarAgent.from_results(AGENT,
                                                      REGISTRAR_AGENT))

    def test_post_not_resent_when_it_may_have_arrived(self):
        for exc in (requests.exceptions.ReadTimeout('slow'),
                    requests.exceptions.ConnectionError('reset')):
            self.sleeps[:] = []
            add = self._post([{'exc': exc}, ok()])
            self.assertRaises(client.KeylimeUnavailable, add)
            self.assertEqual([], self.sleeps)
        add = self._post([err(500, 'boom'), ok()])
        self.assertRaises(client.KeylimeUnavailable, add)

    def test_post_resent_when_it_never_left(self):
        refused = requests.exceptions.ConnectionError(
            urllib3.exceptions.MaxRetryError(
                None, '/', urllib3.exceptions.NewConnectionError(
                    None, 'Connection refused')))
        add = self._post([{'exc': refused},
                          {'exc': requests.exceptions.ConnectTimeout('t')},
                          err(503, 'starting'), ok()])
        add()
        self.assertEqual([0.5, 1.0, 2.0], self.sleeps)


class RegistrarTest(_Base):

    def test_get_agent(self):
        self.mock.get(REG + '/v2.6/agents/' + AGENT, **ok(REGISTRAR_AGENT))
        agent = self.registrar().get_agent(AGENT)
        self.assertEqual(AGENT, agent.agent_id)
        self.assertEqual('RUtUUE0=', agent.ek_tpm)
        self.assertEqual('Q0VSVA==', agent.ekcert)
        self.assertEqual('QUlLVFBN', agent.aik_tpm)
        self.assertEqual('10.0.0.5', agent.ip)
        self.assertEqual(9002, agent.port)
        self.assertEqual(1, agent.regcount)
        self.assertNotIn('raw=', repr(agent))

    def test_not_registered(self):
        message = "Agent with ID '%s' has not been activated" % AGENT
        self.mock.get(REG + '/v2.6/agents/' + AGENT, **err(404, message))
        e = self.assertRaises(client.AgentNotRegistered,
                              self.registrar().get_agent, AGENT)
        self.assertIsInstance(e, client.AgentNotFound)
        self.assertEqual(404, e.status)
        self.assertEqual(message, e.keylime_message)
        self.assertEqual(AGENT, e.agent_uuid)
        self.assertIn('has not been activated', str(e))
        self.assertIn('agent UUID is the instance UUID', str(e))
        self.assertEqual([], self.sleeps)

    def test_delete(self):
        self.mock.delete(REG + '/v2.6/agents/' + AGENT, [
            ok(), err(404, 'not found'), err(404, 'not found')])
        registrar = self.registrar()
        self.assertTrue(registrar.delete_agent(AGENT))
        self.assertFalse(registrar.delete_agent(AGENT, missing_ok=True))
        self.assertRaises(client.AgentNotRegistered, registrar.delete_agent,
                          AGENT)

    def test_list(self):
        self.mock.get(REG + '/v2.6/agents/',
                      **ok({'uuids': ['a', 'b']}))
        self.assertEqual(['a', 'b'], self.registrar().list_agents())

    def test_error_with_non_json_body(self):
        self.mock.get(REG + '/v2.6/agents/' + AGENT, status_code=403,
                      text='<html>Forbidden</html>')
        e = self.assertRaises(client.KeylimeRequestError,
                              self.registrar().get_agent, AGENT)
        self.assertEqual(403, e.status)
        self.assertIn('<html>Forbidden</html>', str(e))

    def test_forbidden(self):
        detail = ('Action list_agents requires admin authentication (mTLS '
                  'certificate)')
        self.mock.get(REG + '/v2.6/agents/', status_code=403, json={
            'errors': [{'status': '403', 'title': 'Forbidden',
                        'detail': detail}]})
        e = self.assertRaises(client.KeylimeForbidden,
                              self.registrar().list_agents)
        self.assertIsInstance(e, client.KeylimeRequestError)
        self.assertEqual(detail, e.keylime_message)
        self.assertIn('cert_file and key_file', str(e))

    def test_bad_agent_uuid(self):
        self.assertRaises(ValueError, self.registrar().get_agent, 'a/b')
        self.assertRaises(ValueError, self.registrar().get_agent, '')


class VerifierTest(_Base):

    def setUp(self):
        super().setUp()
        self.agent = client.RegistrarAgent.from_results(AGENT,
                                                        REGISTRAR_AGENT)
        self.url = VER + '/v2.6/agents/' + AGENT

    def test_add_body(self):
        self.mock.post(self.url, **ok())
        self.verifier().add_agent(
            AGENT, self.agent, tpm_policy={'23': ['00' * 32], '7': []},
            runtime_policy={'meta': {'version': 1}},
            metadata={'instance': AGENT}, v='c2VjcmV0LXY=')
        body = self.mock.last_request.json()
        self.assertEqual('c2VjcmV0LXY=', body['v'])
        self.assertEqual('10.0.0.5', body['cloudagent_ip'])
        self.assertEqual(9002, body['cloudagent_port'])
        self.assertEqual('verifier.example', body['verifier_ip'])
        self.assertEqual(8881, body['verifier_port'])
        self.assertEqual({'23': ['00' * 32], '7': [], 'mask': '0x800080'},
                         json.loads(body['tpm_policy']))
        self.assertEqual({'meta': {'version': 1}}, json.loads(
            base64.b64decode(body['runtime_policy'])))
        self.assertEqual({'instance': AGENT}, json.loads(body['metadata']))
        self.assertEqual('QUlLVFBN', body['ak_tpm'])
        self.assertEqual(REGISTRAR_AGENT['mtls_cert'], body['mtls_cert'])
        self.assertEqual('2.1', body['supported_version'])
        self.assertEqual(['sha512', 'sha384', 'sha256'],
                         body['accept_tpm_hash_algs'])
        for key in ('runtime_policy_name', 'runtime_policy_key',
                    'mb_policy', 'mb_policy_name',
                    'ima_sign_verification_keys', 'revocation_key',
                    'accept_tpm_encryption_algs', 'accept_tpm_signing_algs'):
            self.assertIn(key, body)
        # Bodies (the V key half, keys) are never logged.
        self.assertNotIn('c2VjcmV0LXY=', self.logger.output)
        self.assertNotIn('QUlLVFBN', self.logger.output)

    def test_add_defaults(self):
        self.mock.post(self.url, **ok())
        self.verifier(verifier_ip='192.0.2.1', verifier_port=9999).add_agent(
            AGENT, self.agent, cloudagent_ip='10.1.1.1',
            cloudagent_port=9003, runtime_policy_name='base',
            mb_policy_name='mb')
        body = self.mock.last_request.json()
        self.assertEqual({'mask': '0x0'}, json.loads(body['tpm_policy']))
        self.assertEqual('', body['runtime_policy'])
        self.assertEqual('base', body['runtime_policy_name'])
        self.assertEqual('mb', body['mb_policy_name'])
        self.assertIsNone(body['mb_policy'])
        self.assertIsNone(body['v'])
        self.assertEqual('10.1.1.1', body['cloudagent_ip'])
        self.assertEqual(9003, body['cloudagent_port'])
        self.assertEqual('192.0.2.1', body['verifier_ip'])
        self.assertEqual(9999, body['verifier_port'])

    def test_add_keeps_a_given_mask(self):
        self.assertEqual({'mask': '0x1', '23': []},
                         client.tpm_policy_with_mask({'mask': '0x1',
                                                      '23': []}))

    def test_add_without_address(self):
        agent = client.RegistrarAgent(agent_id=AGENT, aik_tpm='x')
        e = self.assertRaises(client.KeylimeError,
                              self.verifier().add_agent, AGENT, agent)
        self.assertIn('agent_network', str(e))

    def test_add_conflict_and_refusal(self):
        self.mock.post(self.url, [
            err(409, 'Agent of uuid %s already exists.' % AGENT),
            err(400, 'mTLS certificate for agent is required!')])
        verifier = self.verifier()
        e = self.assertRaises(client.AgentAlreadyExists, verifier.add_agent,
                              AGENT, self.agent)
        self.assertIn('already enrolled', str(e))
        e = self.assertRaises(client.KeylimeRequestError, verifier.add_agent,
                              AGENT, self.agent)
        self.assertEqual(400, e.status)
        self.assertEqual('mTLS certificate for agent is required!',
                         e.keylime_message)
        self.assertIn('refused POST /v2.6/agents/%s' % AGENT, str(e))

    def test_get_agent_status(self):
        fields = {'operational_state': 3, 'attestation_status': 'PASS',
                  'attestation_count': 4, 'last_event_id': None}
        self.mock.get(self.url, [ok(fields), ok({AGENT: fields}),
                                 ok({'operational_state': 9,
                                     'attestation_status': 'FAIL',
                                     'last_event_id':
                                         'pcr_validation.invalid_pcr_23'}),
                                 ok({'operational_state': 1})])
        verifier = self.verifier()
        for _ in range(2):
            status = verifier.get_agent(AGENT)
            self.assertEqual(client.GET_QUOTE, status.operational_state)
            self.assertEqual('Get Quote', status.state_name)
            self.assertTrue(status.passed)
            self.assertFalse(status.failed)
            self.assertEqual(4, status.attestation_count)
        status = verifier.get_agent(AGENT)
        self.assertEqual('Invalid Quote', status.state_name)
        self.assertTrue(status.failed)
        self.assertFalse(status.passed)
        status = verifier.get_agent(AGENT)
        self.assertFalse(status.failed or status.passed)

    def test_unknown_state(self):
        status = client.AgentStatus.from_results(AGENT, {})
        self.assertEqual('unknown (-1)', status.state_name)

    def test_get_unknown_agent(self):
        self.mock.get(self.url, **err(404, 'agent id not found'))
        e = self.assertRaises(client.AgentNotFound,
                              self.verifier().get_agent, AGENT)
        self.assertNotIsInstance(e, client.AgentNotRegistered)
        self.assertIn('not known to the Keylime verifier', str(e))

    def test_delete_stop_reactivate(self):
        self.mock.delete(self.url, [{'status_code': 202, 'json': {
            'code': 202, 'status': 'Accepted'}}, err(404, 'not found')])
        self.mock.put(self.url + '/stop', **ok())
        self.mock.put(self.url + '/reactivate', **ok())
        verifier = self.verifier()
        self.assertTrue(verifier.delete_agent(AGENT))
        self.assertFalse(verifier.delete_agent(AGENT, missing_ok=True))
        verifier.stop_agent(AGENT)
        verifier.reactivate_agent(AGENT)
        self.assertEqual('PUT', self.mock.last_request.method)

    def test_list(self):
        fields = {'operational_state': 3, 'attestation_status': 'PASS'}
        self.mock.get(VER + '/v2.6/agents/', [
            ok({AGENT: fields, 'other': dict(fields, operational_state=9)}),
            ok({'uuids': [[AGENT], ['other']]})])
        verifier = self.verifier(verifier_id='v1')
        agents = verifier.list_agents()
        self.assertEqual({AGENT, 'other'}, set(agents))
        self.assertTrue(agents[AGENT].passed)
        self.assertTrue(agents['other'].failed)
        self.assertEqual({'bulk': ['true'], 'verifier': ['v1']},
                         self.mock.request_history[-1].qs)
        self.assertEqual([AGENT, 'other'], verifier.list_agents(bulk=False))
        self.assertEqual({'verifier': ['v1']},
                         self.mock.request_history[-1].qs)


class FromConfTest(_Base):

    def test_from_conf(self):
        conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(conf)
        conf([], default_config_files=[])
        conf.set_override('registrar_url', REG, 'nova_vtpm_keylime')
        conf.set_override('verifier_url', VER, 'nova_vtpm_keylime')
        conf.set_override('cert_file', '/c', 'nova_vtpm_keylime')
        conf.set_override('key_file', '/k', 'nova_vtpm_keylime')
        conf.set_override('ca_file', '/ca', 'nova_vtpm_keylime')
        conf.set_override('retries', 1, 'nova_vtpm_keylime')
        conf.set_override('timeout', 7.5, 'nova_vtpm_keylime')
        conf.set_override('verifier_ip', '192.0.2.9', 'nova_vtpm_keylime')
        registrar = client.RegistrarClient.from_conf(conf)
        verifier = client.VerifierClient.from_conf(conf)
        self.assertEqual(REG, registrar.url)
        self.assertEqual(1, registrar.retries)
        self.assertEqual(7.5, verifier.timeout)
        self.assertEqual('/ca', verifier._verify)
        self.assertEqual(('/c', '/k'), verifier._cert)
        self.assertEqual('192.0.2.9', verifier.verifier_ip)
        self.assertEqual(8881, verifier.verifier_port)

    def test_options(self):
        conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(conf)
        conf([], default_config_files=[])
        group = conf.nova_vtpm_keylime
        self.assertEqual(600, group.registration_deadline)
        self.assertEqual('tag', group.failure_action)
        self.assertEqual(3, group.retries)
        self.assertEqual('2.1', group.agent_api_version)
        self.assertIsNone(group.ek_trust_dir)
        opts = {o.name: o for o in conf._groups['nova_vtpm_keylime']
                ._opts.values() for o in [o['opt']]}
        self.assertTrue(opts['key_password'].secret)
        self.assertEqual({'none', 'lock', 'pause', 'stop', 'tag'},
                         {c[0] for c in opts['failure_action']
                          .type.choices.items()})
        self.assertRaises(ValueError, conf.set_override, 'registrar_url',
                          'http://registrar:8890', 'nova_vtpm_keylime')
