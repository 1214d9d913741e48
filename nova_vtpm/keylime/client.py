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

"""Clients of the Keylime registrar and verifier REST APIs.

Both speak HTTPS with mutual TLS: nova-vtpm presents a client certificate
the Keylime services trust and checks theirs against a CA bundle. Server
verification (chain and host name) is always on; there is no option to turn
it off.

The API version is negotiated once per client from ``GET /version``: the
highest version both sides support (:data:`SUPPORTED_API_VERSIONS`).

Every call has a timeout. Connection errors, timeouts and 5xx answers are
retried a bounded number of times with exponential backoff; a ``POST`` is
retried only when the request certainly never reached the server, so that
an add is not sent twice. What is left is raised as a typed exception
(:class:`KeylimeUnavailable`, :class:`AgentNotFound`,
:class:`AgentNotRegistered`, :class:`AgentAlreadyExists`,
:class:`KeylimeForbidden`, :class:`KeylimeRequestError`,
:class:`KeylimeTLSError`, :class:`KeylimeVersionError`) whose message says
what to do.

The hook that enrols instances uses these building blocks without blocking:

* registration: :meth:`RegistrarClient.get_agent` raises
  :class:`AgentNotRegistered` until the guest's agent has registered and
  activated (a ``RetryLater`` until the registration deadline);
* :func:`nova_vtpm.keylime.ek.verify_ek` on the returned
  :class:`RegistrarAgent`;
* :meth:`VerifierClient.add_agent` (:class:`AgentAlreadyExists` means it
  is already enrolled), :meth:`VerifierClient.get_agent` for the
  :class:`AgentStatus`, :meth:`VerifierClient.delete_agent` and
  :meth:`RegistrarClient.delete_agent` with ``missing_ok=True``.

Nothing secret is logged: no request or response body (an add carries the
V key half, answers carry keys and certificates), only methods, paths and
status codes.
"""

import base64
import dataclasses
import json
import time
import urllib.parse

from oslo_log import log as logging
import requests
from requests import adapters
import urllib3

from nova_vtpm import exception

LOG = logging.getLogger(__name__)

# REST API versions nova-vtpm speaks, oldest first. 3.0 (push mode) is a
# different API and is not in the list.
SUPPORTED_API_VERSIONS = ('2.1', '2.2', '2.3', '2.4', '2.5', '2.6')

# The agent API version given to the verifier at add time. The 6.x Python
# agent speaks 2.1 at most; the verifier moves a newer agent up by itself
# (never down), so the oldest version is the safe default.
DEFAULT_AGENT_API_VERSION = '2.1'

# What Keylime's tenant accepts by default (tenant.conf).
DEFAULT_HASH_ALGS = ('sha512', 'sha384', 'sha256')
DEFAULT_ENCRYPTION_ALGS = ('ecc', 'rsa')
DEFAULT_SIGNING_ALGS = ('ecschnorr', 'rsassa')

# Verifier operational states (keylime.common.states).
REGISTERED = 0
START = 1
SAVED = 2
GET_QUOTE = 3
GET_QUOTE_RETRY = 4
PROVIDE_V = 5
PROVIDE_V_RETRY = 6
FAILED = 7
TERMINATED = 8
INVALID_QUOTE = 9
TENANT_FAILED = 10

STATE_NAMES = {
    REGISTERED: 'Registered',
    START: 'Start',
    SAVED: 'Saved',
    GET_QUOTE: 'Get Quote',
    GET_QUOTE_RETRY: 'Get Quote (retry)',
    PROVIDE_V: 'Provide V',
    PROVIDE_V_RETRY: 'Provide V (retry)',
    FAILED: 'Failed',
    TERMINATED: 'Terminated',
    INVALID_QUOTE: 'Invalid Quote',
    TENANT_FAILED: 'Tenant Quote Failed',
}
FAILED_STATES = frozenset((FAILED, INVALID_QUOTE, TENANT_FAILED))
ATTESTING_STATES = frozenset((GET_QUOTE, GET_QUOTE_RETRY))

# Answers worth another try: the service is (re)starting or overloaded.
RETRY_STATUSES = frozenset((500, 502, 503, 504))
MAX_BACKOFF = 30.0


# Exceptions -------------------------------------------------------------

class KeylimeError(exception.NovaVTPMException):
    msg_fmt = 'Keylime error: %(reason)s'


class KeylimeConfigError(KeylimeError, exception.ConfigError):
    msg_fmt = ('Invalid Keylime client configuration: %(reason)s. Fix the '
               '[nova_vtpm_keylime] options.')


class KeylimeUnavailable(KeylimeError):
    """The service cannot be reached or keeps failing (transient)."""
    msg_fmt = ('The Keylime %(service)s at %(url)s is unavailable after '
               '%(attempts)s attempt(s): %(reason)s. Check that the '
               '%(service)s runs and that this host reaches it; the call '
               'is tried again later.')


class KeylimeTLSError(KeylimeError):
    """The TLS handshake failed: a configuration problem, not retried."""
    msg_fmt = ('TLS with the Keylime %(service)s at %(url)s failed: '
               '%(reason)s. Check [nova_vtpm_keylime] ca_file (the CA that '
               'signed the %(service)s\'s server certificate, whose names '
               'must include the URL\'s host), cert_file and key_file (a '
               'client certificate the %(service)s trusts).')


class KeylimeVersionError(KeylimeError):
    msg_fmt = ('The Keylime %(service)s at %(url)s offers no REST API '
               'version nova-vtpm speaks: it supports %(theirs)s, nova-vtpm '
               '%(ours)s. Use a Keylime release that supports one of '
               'nova-vtpm\'s versions.')


class KeylimeRequestError(KeylimeError):
    """Keylime answered with an error status.

    :ivar status: the HTTP status code.
    :ivar keylime_message: Keylime's own message (the ``status`` field of
        its JSON answer), or the start of the body.
    """
    msg_fmt = ('The Keylime %(service)s refused %(method)s %(path)s: HTTP '
               '%(status)s: %(keylime_message)s')

    def __init__(self, service, method, path, status, keylime_message,
                 agent_uuid=None):
        super().__init__(service=service, method=method, path=path,
                         status=status, keylime_message=keylime_message,
                         agent_uuid=agent_uuid)
        self.service = service
        self.status = status
        self.keylime_message = keylime_message
        self.agent_uuid = agent_uuid


class KeylimeForbidden(KeylimeRequestError):
    msg_fmt = ('The Keylime %(service)s refused %(method)s %(path)s: HTTP '
               '%(status)s: %(keylime_message)s. Check [nova_vtpm_keylime] '
               'cert_file and key_file: the %(service)s needs a client '
               'certificate signed by a CA it trusts for administration.')


class AgentNotFound(KeylimeRequestError):
    msg_fmt = ('Agent %(agent_uuid)s is not known to the Keylime '
               '%(service)s (HTTP 404: %(keylime_message)s).')


class AgentNotRegistered(AgentNotFound):
    msg_fmt = ('The Keylime agent of instance %(agent_uuid)s has not '
               'registered with the Keylime registrar, or has not activated '
               'its registration (HTTP 404: %(keylime_message)s). The guest '
               'must run a Keylime agent whose agent UUID is the instance '
               'UUID and which uses this registrar; if it does, wait: it '
               'registers once the guest has booted.')


class AgentAlreadyExists(KeylimeRequestError):
    msg_fmt = ('Agent %(agent_uuid)s is already known to the Keylime '
               '%(service)s (HTTP 409: %(keylime_message)s). It is already '
               'enrolled; delete it from the %(service)s first to enrol it '
               'again.')


# Results ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RegistrarAgent:
    """An agent as the registrar knows it (keys are public material)."""

    agent_id: str
    ek_tpm: str = None          # base64 TPM2B_PUBLIC of the EK
    ekcert: str = None          # base64 DER EK certificate, or None
    aik_tpm: str = None         # base64 TPM2B_PUBLIC of the AK
    mtls_cert: str = None       # PEM of the agent's mTLS certificate
    ip: str = None
    port: int = None
    regcount: int = None
    raw: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_results(cls, agent_id, results):
        port = results.get('port')
        try:
            port = int(port) if port not in (None, '') else None
        except (TypeError, ValueError):
            port = None
        return cls(agent_id=results.get('agent_id') or agent_id,
                   ek_tpm=results.get('ek_tpm'),
                   ekcert=results.get('ekcert'),
                   aik_tpm=results.get('aik_tpm'),
                   mtls_cert=results.get('mtls_cert'),
                   ip=results.get('ip'), port=port,
                   regcount=results.get('regcount'),
                   raw=dict(results))


@dataclasses.dataclass(frozen=True)
class AgentStatus:
    """An agent's attestation status at the verifier."""

    agent_id: str
    operational_state: int
    attestation_status: str = None   # PASS, FAIL or None (not yet)
    attestation_count: int = None
    last_received_quote: int = None
    last_successful_attestation: int = None
    last_event_id: str = None
    severity_level: int = None
    verifier_id: str = None
    raw: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_results(cls, agent_id, results):
        state = results.get('operational_state')
        try:
            state = int(state)
        except (TypeError, ValueError):
            state = -1
        return cls(agent_id=agent_id, operational_state=state,
                   attestation_status=results.get('attestation_status'),
                   attestation_count=results.get('attestation_count'),
                   last_received_quote=results.get('last_received_quote'),
                   last_successful_attestation=results.get(
                       'last_successful_attestation'),
                   last_event_id=results.get('last_event_id'),
                   severity_level=results.get('severity_level'),
                   verifier_id=results.get('verifier_id'),
                   raw=dict(results))

    @property
    def state_name(self):
        return STATE_NAMES.get(self.operational_state,
                               'unknown (%s)' % self.operational_state)

    @property
    def failed(self):
        """The verifier stopped trusting (or reaching) the agent."""
        return (self.operational_state in FAILED_STATES
                or self.attestation_status == 'FAIL')

    @property
    def passed(self):
        """Being polled, and the last attestation passed."""
        return (self.operational_state in ATTESTING_STATES
                and self.attestation_status == 'PASS')


# Helpers ----------------------------------------------------------------

def _version_tuple(version):
    try:
        return tuple(int(p) for p in str(version).split('.'))
    except ValueError:
        return None


def negotiate_version(server_versions, ours=SUPPORTED_API_VERSIONS):
    """The highest version in both lists, or None."""
    theirs = {_version_tuple(v) for v in server_versions or ()}
    common = [v for v in ours if _version_tuple(v) in theirs]
    if not common:
        return None
    return max(common, key=_version_tuple)


def tpm_policy_with_mask(policy):
    """A Keylime TPM policy with its ``mask`` (the PCRs it names).

    Keylime's tenant adds the mask; an empty policy becomes
    ``{"mask": "0x0"}`` (no PCR is checked, the quote still is).
    """
    policy = dict(policy or {})
    if 'mask' not in policy:
        mask = 0
        for key in policy:
            if str(key).isdigit():
                mask |= 1 << int(key)
        policy['mask'] = hex(mask)
    return policy


def _request_not_sent(exc):
    """Whether a requests exception proves the request never went out."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


def _keylime_message(response):
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get('status'):
        return str(body['status'])
    if isinstance(body, dict) and isinstance(body.get('errors'), list):
        # JSON:API errors (7.x authorization): [{"title", "detail"}, ...]
        details = [str(e.get('detail') or e.get('title'))
                   for e in body['errors'] if isinstance(e, dict)]
        if details:
            return '; '.join(details)
    text = (response.text or '').strip()
    return text[:200] or response.reason or 'no message'


class _KeyPasswordAdapter(adapters.HTTPAdapter):
    """An HTTPAdapter whose pools decrypt the client key with a password."""

    def __init__(self, key_password, **kwargs):
        self._key_password = key_password
        super().__init__(**kwargs)

    def init_poolmanager(self, connections, maxsize, block=False,
                         **pool_kwargs):
        pool_kwargs['key_password'] = self._key_password
        return super().init_poolmanager(connections, maxsize, block=block,
                                        **pool_kwargs)


# Clients ----------------------------------------------------------------

class _KeylimeClient:
    service = 'service'

    def __init__(self, url, cert_file=None, key_file=None, ca_file=None,
                 key_password=None, timeout=30.0, retries=3,
                 retry_backoff=0.5, session=None, sleep=time.sleep):
        """A client of one Keylime service.

        :param url: ``https://host:port`` of the service (a path prefix is
            kept). Plain HTTP is refused.
        :param cert_file: PEM client certificate (mTLS).
        :param key_file: PEM private key of ``cert_file`` (or None when
            ``cert_file`` holds both).
        :param ca_file: PEM bundle of the CAs to trust for the server
            certificate; None: the system's CAs.
        :param key_password: the password of an encrypted ``key_file``.
        :param timeout: seconds for connecting and for each read.
        :param retries: further attempts after a connection error,
            timeout or 5xx (0: none).
        :param retry_backoff: seconds before the first retry, doubled at
            each further one (at most 30 s).
        """
        parsed = urllib.parse.urlsplit(url or '')
        if parsed.scheme != 'https' or not parsed.netloc:
            raise KeylimeConfigError(
                reason='the %s URL must be https://<host>:<port>, got %r '
                       '(plain HTTP is not supported: nova-vtpm always '
                       'uses mutual TLS)' % (self.service, url))
        if key_file and not cert_file:
            raise KeylimeConfigError(
                reason='a client key_file without a cert_file')
        self.url = url.rstrip('/')
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.retry_backoff = max(0.0, float(retry_backoff))
        self._sleep = sleep
        # Server verification is always on: the CA bundle, else the system.
        self._verify = ca_file or True
        if cert_file:
            self._cert = (cert_file, key_file) if key_file else cert_file
        else:
            self._cert = None
        self.session = session or requests.Session()
        if key_password:
            self.session.mount('https://', _KeyPasswordAdapter(key_password))
        self._api_version = None

    @classmethod
    def _conf_kwargs(cls, conf):
        group = conf.nova_vtpm_keylime
        return dict(cert_file=group.cert_file, key_file=group.key_file,
                    ca_file=group.ca_file, key_password=group.key_password,
                    timeout=group.timeout, retries=group.retries,
                    retry_backoff=group.retry_backoff)

    # Versions

    @property
    def api_version(self):
        """The negotiated API version (negotiated at first use)."""
        if self._api_version is None:
            self.negotiate()
        return self._api_version

    def get_version(self):
        """``GET /version``: ``{'current_version', 'supported_versions'}``."""
        return self._request('GET', '/version', versioned=False)

    def negotiate(self):
        """(Re)negotiate the API version with the service."""
        results = self.get_version()
        theirs = list(results.get('supported_versions') or ())
        if not theirs and results.get('current_version'):
            theirs = [results['current_version']]
        version = negotiate_version(theirs)
        if version is None:
            raise KeylimeVersionError(
                service=self.service, url=self.url,
                theirs=', '.join(map(str, theirs)) or 'nothing',
                ours=', '.join(SUPPORTED_API_VERSIONS))
        if version != self._api_version:
            LOG.debug('Keylime %s at %s: API version %s', self.service,
                      self.url, version)
        self._api_version = version
        return version

    # Requests

    def _request(self, method, path, versioned=True, body=None, params=None,
                 agent_uuid=None, not_found=None, conflict=None,
                 missing_ok=False):
        if versioned:
            path = '/v%s%s' % (self.api_version, path)
        url = self.url + path
        attempts = self.retries + 1
        reason = None
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(
                    method, url, json=body, params=params,
                    timeout=self.timeout, verify=self._verify,
                    cert=self._cert)
            except requests.exceptions.SSLError as e:
                raise KeylimeTLSError(service=self.service, url=self.url,
                                      reason=e)
            except (requests.exceptions.ConnectionError,
                    requests.exceptions.Timeout) as e:
                reason = '%s (%s)' % (type(e).__name__, e)
                if method == 'POST' and not _request_not_sent(e):
                    # It may have arrived: sending it again could add twice.
                    attempts = attempt
                    break
            else:
                LOG.debug('Keylime %s: %s %s -> %s', self.service, method,
                          path, response.status_code)
                if response.status_code not in RETRY_STATUSES:
                    return self._handle(response, method, path, agent_uuid,
                                        not_found, conflict, missing_ok)
                reason = 'HTTP %s: %s' % (response.status_code,
                                          _keylime_message(response))
                if method == 'POST' and response.status_code != 503:
                    attempts = attempt
                    break
            if attempt < attempts:
                delay = min(self.retry_backoff * 2 ** (attempt - 1),
                            MAX_BACKOFF)
                LOG.debug('Keylime %s: %s %s failed (%s); attempt %d of %d '
                          'in %.1fs', self.service, method, path, reason,
                          attempt + 1, attempts, delay)
                self._sleep(delay)
        raise KeylimeUnavailable(service=self.service, url=self.url,
                                 attempts=attempts, reason=reason)

    def _handle(self, response, method, path, agent_uuid, not_found,
                conflict, missing_ok):
        status = response.status_code
        if 200 <= status < 300:
            try:
                body = response.json()
            except ValueError:
                body = {}
            results = body.get('results') if isinstance(body, dict) else None
            return results if isinstance(results, dict) else {}
        message = _keylime_message(response)
        if status == 404 and agent_uuid is not None:
            if missing_ok:
                return None
            raise (not_found or AgentNotFound)(
                self.service, method, path, status, message, agent_uuid)
        if status == 409 and conflict is not None:
            raise conflict(self.service, method, path, status, message,
                           agent_uuid)
        if status in (401, 403):
            raise KeylimeForbidden(self.service, method, path, status,
                                   message, agent_uuid)
        raise KeylimeRequestError(self.service, method, path, status,
                                  message, agent_uuid)

    @staticmethod
    def _agent_path(agent_uuid, suffix=''):
        if not agent_uuid or '/' in str(agent_uuid):
            raise ValueError('invalid agent UUID %r' % (agent_uuid,))
        return '/agents/%s%s' % (urllib.parse.quote(str(agent_uuid)), suffix)


class RegistrarClient(_KeylimeClient):
    """The registrar's REST API (its TLS port)."""

    service = 'registrar'

    @classmethod
    def from_conf(cls, conf, **kwargs):
        options = cls._conf_kwargs(conf)
        options.update(kwargs)
        return cls(conf.nova_vtpm_keylime.registrar_url, **options)

    def get_agent(self, agent_uuid):
        """The registered and activated agent ``agent_uuid``.

        :raises AgentNotRegistered: unknown, or registered but not
            activated yet.
        :returns: a :class:`RegistrarAgent`.
        """
        results = self._request('GET', self._agent_path(agent_uuid),
                                agent_uuid=agent_uuid,
                                not_found=AgentNotRegistered)
        return RegistrarAgent.from_results(agent_uuid, results)

    def delete_agent(self, agent_uuid, missing_ok=False):
        """Forget agent ``agent_uuid``.

        :returns: True if it was deleted, False if it was not there and
            ``missing_ok``.
        :raises AgentNotRegistered: it was not there (unless
            ``missing_ok``).
        """
        result = self._request('DELETE', self._agent_path(agent_uuid),
                               agent_uuid=agent_uuid,
                               not_found=AgentNotRegistered,
                               missing_ok=missing_ok)
        return result is not None

    def list_agents(self):
        """The UUIDs of all registered agents."""
        results = self._request('GET', '/agents/')
        return _flatten_uuids(results.get('uuids'))


class VerifierClient(_KeylimeClient):
    """The verifier's REST API."""

    service = 'verifier'

    def __init__(self, url, verifier_ip=None, verifier_port=None,
                 verifier_id=None, **kwargs):
        """See :class:`_KeylimeClient`; besides:

        :param verifier_ip: the verifier's address sent in an add (the
            verifier records it); default: the URL's host.
        :param verifier_port: likewise; default: the URL's port.
        :param verifier_id: the verifier's ``uuid`` option, to list only
            its agents; None: every agent.
        """
        super().__init__(url, **kwargs)
        parsed = urllib.parse.urlsplit(self.url)
        self.verifier_ip = verifier_ip or parsed.hostname
        self.verifier_port = int(verifier_port or parsed.port or 443)
        self.verifier_id = verifier_id

    @classmethod
    def from_conf(cls, conf, **kwargs):
        group = conf.nova_vtpm_keylime
        options = cls._conf_kwargs(conf)
        options.update(verifier_ip=group.verifier_ip,
                       verifier_port=group.verifier_port,
                       verifier_id=group.verifier_id)
        options.update(kwargs)
        return cls(group.verifier_url, **options)

    def add_agent(self, agent_uuid, registrar_agent, cloudagent_ip=None,
                  cloudagent_port=None, tpm_policy=None, runtime_policy=None,
                  runtime_policy_name='', runtime_policy_key=None,
                  mb_policy=None, mb_policy_name='', metadata=None,
                  revocation_key='', ima_sign_verification_keys='',
                  accept_tpm_hash_algs=DEFAULT_HASH_ALGS,
                  accept_tpm_encryption_algs=DEFAULT_ENCRYPTION_ALGS,
                  accept_tpm_signing_algs=DEFAULT_SIGNING_ALGS,
                  agent_api_version=DEFAULT_AGENT_API_VERSION, v=None):
        """Have the verifier attest agent ``agent_uuid``.

        Verify the agent's EK first (:func:`nova_vtpm.keylime.ek.verify_ek`):
        the verifier trusts the AK the registrar vouches for, and the
        registrar does not check who issued the EK.

        :param registrar_agent: the :class:`RegistrarAgent` (its AK and
            mTLS certificate are sent; its address is the default).
        :param cloudagent_ip: where the verifier reaches the agent;
            default: the address the agent registered.
        :param cloudagent_port: likewise.
        :param tpm_policy: a Keylime TPM policy (dict of PCR -> allowed
            digests); ``mask`` is added; None: no PCR is checked.
        :param runtime_policy: an IMA runtime policy (dict, JSON str or
            bytes), stored under ``runtime_policy_name``.
        :param runtime_policy_name: alone: the name of a policy stored on
            the verifier.
        :param mb_policy: a measured boot policy (dict or JSON str).
        :param mb_policy_name: alone: a stored measured boot policy.
        :param metadata: a dict the verifier keeps with the agent.
        :param agent_api_version: the agent API version to start with.
        :param v: base64 V key half, for payload delivery (None: none).
        :raises AgentAlreadyExists: the verifier has the agent already.
        :raises KeylimeRequestError: the verifier refused (message says
            why).
        """
        ip = cloudagent_ip or registrar_agent.ip
        port = cloudagent_port or registrar_agent.port
        if not ip or not port:
            raise KeylimeError(
                reason='no address for the agent of %s: it registered none '
                       'and none was given; set [nova_vtpm_keylime] '
                       'agent_network' % agent_uuid)
        if isinstance(runtime_policy, dict):
            runtime_policy = json.dumps(runtime_policy)
        if isinstance(runtime_policy, str):
            runtime_policy = runtime_policy.encode('utf-8')
        runtime_policy = (base64.b64encode(runtime_policy).decode('ascii')
                          if runtime_policy else '')
        if isinstance(mb_policy, dict):
            mb_policy = json.dumps(mb_policy)
        body = {
            'v': v,
            'cloudagent_ip': ip,
            'cloudagent_port': int(port),
            'verifier_ip': self.verifier_ip,
            'verifier_port': self.verifier_port,
            'tpm_policy': json.dumps(tpm_policy_with_mask(tpm_policy)),
            'runtime_policy': runtime_policy,
            'runtime_policy_name': runtime_policy_name or '',
            'runtime_policy_key': runtime_policy_key,
            'mb_policy': mb_policy or None,
            'mb_policy_name': mb_policy_name or '',
            'ima_sign_verification_keys': ima_sign_verification_keys or '',
            'metadata': json.dumps(metadata or {}),
            'revocation_key': revocation_key or '',
            'accept_tpm_hash_algs': list(accept_tpm_hash_algs),
            'accept_tpm_encryption_algs': list(accept_tpm_encryption_algs),
            'accept_tpm_signing_algs': list(accept_tpm_signing_algs),
            'ak_tpm': registrar_agent.aik_tpm,
            'mtls_cert': registrar_agent.mtls_cert,
            'supported_version': agent_api_version,
        }
        self._request('POST', self._agent_path(agent_uuid), body=body,
                      agent_uuid=agent_uuid, conflict=AgentAlreadyExists)

    def get_agent(self, agent_uuid):
        """The :class:`AgentStatus` of ``agent_uuid``.

        :raises AgentNotFound: the verifier does not know it.
        """
        results = self._request('GET', self._agent_path(agent_uuid),
                                agent_uuid=agent_uuid)
        # 2.x answers {"<uuid>": {...}} or the fields themselves.
        if isinstance(results.get(agent_uuid), dict):
            results = results[agent_uuid]
        return AgentStatus.from_results(agent_uuid, results)

    def delete_agent(self, agent_uuid, missing_ok=False):
        """Stop attesting ``agent_uuid`` and forget it.

        In pull mode the verifier may answer 202 and remove the agent
        after its current poll: :meth:`get_agent` then shows state 8
        (Terminated) for a moment before the 404.

        :returns: True if deleted (or being deleted), False if it was not
            there and ``missing_ok``.
        """
        result = self._request('DELETE', self._agent_path(agent_uuid),
                               agent_uuid=agent_uuid, missing_ok=missing_ok)
        return result is not None

    def reactivate_agent(self, agent_uuid):
        """Poll again an agent that failed (e.g. after Invalid Quote).

        Does not resume an agent stopped by :meth:`stop_agent`: delete and
        add that one again.
        """
        self._request('PUT', self._agent_path(agent_uuid, '/reactivate'),
                      agent_uuid=agent_uuid)

    def stop_agent(self, agent_uuid):
        """Stop polling ``agent_uuid`` but keep it."""
        self._request('PUT', self._agent_path(agent_uuid, '/stop'),
                      agent_uuid=agent_uuid)

    def list_agents(self, bulk=True):
        """This verifier's agents.

        :param bulk: True: ``{uuid: AgentStatus}``; False: a list of UUIDs.
        """
        params = {'verifier': self.verifier_id or ''}
        if bulk:
            params['bulk'] = 'True'
        results = self._request('GET', '/agents/', params=params)
        if not bulk:
            return _flatten_uuids(results.get('uuids'))
        return {uuid: AgentStatus.from_results(uuid, data)
                for uuid, data in results.items() if isinstance(data, dict)}


def _flatten_uuids(uuids):
    """Keylime lists UUIDs flat or as ``[["<uuid>"], ...]``."""
    flat = []
    for item in uuids or ():
        if isinstance(item, (list, tuple)):
            flat.extend(str(u) for u in item)
        else:
            flat.append(str(item))
    return flat
