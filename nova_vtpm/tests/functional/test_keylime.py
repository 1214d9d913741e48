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

"""nova-vtpm's Keylime clients and EK checks against a real Keylime.

One Keylime 7.14 verifier and registrar per test class (they take seconds
to start); swtpm guest TPMs manufactured like libvirt's, each compute host
an swtpm-localca of its own; keylime 6.4.3 agents registering under
instance UUIDs. Needs ``tools/install-keylime.sh``; skipped without it
(failed with ``NOVA_VTPM_REQUIRE_KEYLIME=1``).
"""

import time
import uuid

from cryptography.hazmat.primitives import serialization
import fixtures
from oslotest import base
from testtools import content

from nova_vtpm.keylime import client as kl_client
from nova_vtpm.keylime import ek
from nova_vtpm.keylime import trust
from nova_vtpm.tests.functional import keylime_fixture

PCR = 23
ZERO_SHA256 = '0' * 64


class KeylimeTest(base.BaseTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        install = keylime_fixture.require_keylime()
        cls.stack = keylime_fixture.KeylimeStack(install, quote_interval=1)
        # (A failed setUp cleans up by itself.)
        cls.stack.setUp()

    @classmethod
    def tearDownClass(cls):
        cls.stack.cleanUp()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.registrar = self.stack.registrar_client()
        self.verifier = self.stack.verifier_client()
        self.timings = {}
        self.addCleanup(self._report_timings)

    def _report_timings(self):
        self.timings.setdefault('stack-start', '%.2f (verifier %.2f, '
                                'registrar %.2f)' % (
                                    self.stack.start_times[0],
                                    self.stack.verifier_start_time,
                                    self.stack.registrar_start_time))
        self.addDetail('timings', content.text_content('\n'.join(
            '%s: %s' % item for item in sorted(self.timings.items()))))

    def _ca(self):
        """A compute host's swtpm-localca (its own directory)."""
        return self.useFixture(fixtures.TempDir()).path

    def _trust_dir(self, **hosts):
        directory = self.useFixture(fixtures.TempDir()).path
        for name, ca_dir in hosts.items():
            keylime_fixture.install_ca_certs(ca_dir, directory, name)
        return directory

    def _guest_and_agent(self, name, ca_dir, instance_uuid=None,
                         agent_uuid=None):
        guest = self.useFixture(keylime_fixture.SwtpmGuest(
            name, instance_uuid=instance_uuid, ca_dir=ca_dir))
        agent = self.useFixture(keylime_fixture.KeylimeAgent(
            self.stack, guest, agent_uuid=agent_uuid))
        self.addCleanup(self._forget, agent.agent_uuid)
        self.timings['agent-registration-%s' % name] = '%.2f' % (
            agent.registration_times[-1])
        return guest, agent

    def _forget(self, agent_uuid):
        self.verifier.delete_agent(agent_uuid, missing_ok=True)
        self.registrar.delete_agent(agent_uuid, missing_ok=True)

    def _wait(self, what, predicate, timeout=60, interval=0.25):
        """predicate()'s first true value, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() >= deadline:
                self.fail('%s: not within %ss (last: %r)\nverifier log:\n%s'
                          % (what, timeout, last, self.stack.log('verifier')))
            time.sleep(interval)

    def _status_when(self, agent_uuid, condition):
        def check():
            status = self.verifier.get_agent(agent_uuid)
            return status if condition(status) else None
        return check

    def test_enrol_attest_detect_and_delete(self):
        host1 = self._ca()
        guest, agent = self._guest_and_agent('vm-a', host1)
        instance = guest.instance_uuid
        store = trust.TrustStore(self._trust_dir(host1=host1))
        self.assertEqual([], store.errors)
        self.assertEqual((1, 1), (len(store.roots), len(store.intermediates)))

        # The registrar has the agent under the instance UUID.
        t0 = time.monotonic()
        registered = self._wait('registration', lambda: (
            self.registrar.get_agent(instance)))
        self.assertEqual(instance, registered.agent_id)
        self.assertIn(instance, self.registrar.list_agents())
        cert = ek.load_ek_certificate(registered.ekcert)
        self.assertEqual(guest.ek_cert_der,
                         cert.public_bytes(serialization.Encoding.DER))

        # Its EK is the vTPM's of this instance.
        verdict = ek.verify_ek(registered.ekcert, registered.ek_tpm,
                               instance, store)
        self.assertTrue(verdict.ok, verdict)
        self.assertEqual(['CN=vm-a:%s' % instance, 'CN=swtpm-localca',
                          'CN=swtpm-localca-rootca'], verdict.chain)

        # Enrol with a PCR 23 policy: attestation passes.
        t1 = time.monotonic()
        self.verifier.add_agent(instance, registered,
                                tpm_policy={str(PCR): [ZERO_SHA256]},
                                metadata={'instance': instance})
        self.assertRaises(kl_client.AgentAlreadyExists,
                          self.verifier.add_agent, instance, registered)
        status = self._wait('PASS', self._status_when(
            instance, lambda s: s.passed))
        self.timings['add-to-pass'] = '%.2f' % (time.monotonic() - t1)
        self.timings['registered-to-pass'] = '%.2f' % (time.monotonic() - t0)
        self.assertEqual(kl_client.GET_QUOTE, status.operational_state)
        self.assertIn(instance, self.verifier.list_agents())
        self.assertIn(instance, self.verifier.list_agents(bulk=False))

        # A change of PCR 23 in the guest is caught.
        t2 = time.monotonic()
        guest.pcr_extend(PCR, 'ab' * 32)
        status = self._wait('Invalid Quote', self._status_when(
            instance, lambda s: s.failed))
        self.timings['extend-to-failure'] = '%.2f' % (time.monotonic() - t2)
        self.assertEqual(kl_client.INVALID_QUOTE, status.operational_state)
        self.assertEqual('FAIL', status.attestation_status)
        self.assertEqual('Invalid Quote', status.state_name)

        # Back to the policy's value: reactivate resumes attestation.
        guest.pcr_reset(PCR)
        self.verifier.reactivate_agent(instance)
        self._wait('PASS after reactivate', self._status_when(
            instance, lambda s: s.passed))

        # Delete from both: 404 from both.
        self.assertTrue(self.verifier.delete_agent(instance))

        def gone():
            try:
                self.verifier.get_agent(instance)
            except kl_client.AgentNotFound:
                return True
            return False

        self._wait('verifier delete', gone, timeout=30)
        self.assertTrue(self.registrar.delete_agent(instance))
        self.assertRaises(kl_client.AgentNotRegistered,
                          self.registrar.get_agent, instance)
        self.assertFalse(self.verifier.delete_agent(instance,
                                                    missing_ok=True))
        self.assertFalse(self.registrar.delete_agent(instance,
                                                     missing_ok=True))
        self.assertNotIn(instance, self.registrar.list_agents())

    def test_tls_is_verified(self):
        # An encrypted client key, with its password.
        with open(self.stack.client_key, 'rb') as f:
            key = serialization.load_pem_private_key(f.read(), None)
        encrypted = self.useFixture(fixtures.TempDir()).join('key.pem')
        with open(encrypted, 'wb') as f:
            f.write(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b'pa55word')))
        registrar = self.stack.registrar_client(key_file=encrypted,
                                                key_password='pa55word')
        self.assertIsInstance(registrar.list_agents(), list)

        # A CA that did not sign the server certificate: refused, at once.
        wrong_ca = self.useFixture(fixtures.TempDir()).join('ca.pem')
        with open(self.stack.client_cert, 'rb') as f:
            client_cert = f.read()
        with open(wrong_ca, 'wb') as f:
            f.write(client_cert)      # a certificate, but not the CA's
        e = self.assertRaises(kl_client.KeylimeTLSError,
                              self.stack.verifier_client(
                                  ca_file=wrong_ca).list_agents)
        self.assertIn('certificate verify failed', str(e))

        # No client certificate: TLS works, the verifier refuses.
        e = self.assertRaises(
            kl_client.KeylimeForbidden,
            self.stack.verifier_client(cert_file=None,
                                       key_file=None).list_agents)
        self.assertEqual(403, e.status)
        self.assertIn('requires admin authentication', e.keylime_message)

    def test_impostors_are_refused(self):
        host1, host2 = self._ca(), self._ca()
        victim = str(uuid.uuid4())
        impostor_uuid = str(uuid.uuid4())

        # A guest whose vTPM belongs to instance A (CN vm-a:<A>, a trusted
        # CA) registers as instance C: stock Keylime accepts it.
        impostor, _ = self._guest_and_agent(
            'vm-a', host1, instance_uuid=victim, agent_uuid=impostor_uuid)
        # (A CA's certificates exist from its first EK certificate on.)
        store = trust.TrustStore(self._trust_dir(host1=host1))
        registered = self.registrar.get_agent(impostor_uuid)
        verdict = ek.verify_ek(registered.ekcert, registered.ek_tpm,
                               impostor_uuid, store)
        self.assertFalse(verdict.ok)
        self.assertEqual(1, len(verdict.reasons), verdict.reasons)
        self.assertIn('belongs to instance %s' % victim, verdict.reasons[0])
        self.assertIn('not to instance %s' % impostor_uuid,
                      verdict.reasons[0])
        # (The same TPM is fine for the instance it was made for.)
        self.assertTrue(ek.verify_ek(registered.ekcert, registered.ek_tpm,
                                     victim, store).ok)

        # A guest whose vTPM comes from a CA nova-vtpm does not trust.
        stranger, _ = self._guest_and_agent('vm-d', host2)
        other = self.registrar.get_agent(stranger.instance_uuid)
        verdict = ek.verify_ek(other.ekcert, other.ek_tpm,
                               stranger.instance_uuid, store)
        self.assertFalse(verdict.ok)
        self.assertEqual(1, len(verdict.reasons), verdict.reasons)
        self.assertIn('does not chain to a trusted root CA',
                      verdict.reasons[0])
        # Both hosts' CAs (same names, different keys) in the store: fine.
        both = trust.TrustStore(self._trust_dir(host1=host1, host2=host2))
        self.assertTrue(ek.verify_ek(other.ekcert, other.ek_tpm,
                                     stranger.instance_uuid, both).ok)

        # A valid certificate with another TPM's key.
        verdict = ek.verify_ek(registered.ekcert, other.ek_tpm, victim,
                               both)
        self.assertFalse(verdict.ok)
        self.assertIn('not the EK the TPM proved', verdict.reasons[0])
