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

"""A real, in-process Nova with two vTPM-capable fake-libvirt computes
whose versioned notifications also go to a real RabbitMQ.

:class:`VTPMServersTestBase` is Nova's own ``test_vtpm`` set-up (from the
wheel: ``nova.tests.functional.libvirt``), made reusable: every test gets
the computes ``compute1`` and ``compute2``, both with swtpm enabled, every
TPM secret security mode (``user``, ``host``, ``deployment``) supported
and thus ``host`` mode live-migratable, Nova's fake key manager, and
helpers to boot, reboot, resize, live migrate and delete servers.

RPC stays on oslo.messaging's fake driver, as in every Nova functional
test. Versioned notifications go to RabbitMQ as a real deployment sends
them (``[oslo_messaging_notifications] driver = messagingv2``, topic
``versioned_notifications``, exchange ``nova``), so a separate process,
e.g. an agent under test, can listen with::

    oslo_messaging.get_notification_listener(
        transport,
        [oslo_messaging.Target(topic='versioned_notifications',
                               exchange='nova')],
        endpoints, executor='threading', pool='my-agent')

How: Nova's ``NotificationFixture`` replaces ``nova.rpc.NOTIFIER`` with an
in-memory fake, which Nova's helpers (``_reboot_server``, ...) wait on.
:class:`RabbitNotificationTee` keeps that fake and, for each versioned
notification the fake accepts, also sends it through a real
``oslo_messaging.Notifier`` with the same publisher_id, priority,
event_type and payload.

The broker: the ``rabbit_url`` argument of ``setUp``, else the
``rabbit_url`` class attribute, else the ``NOVA_VTPM_RABBIT_URL`` environment
variable (e.g. a lab's broker), else a private broker this base starts
(:class:`nova_vtpm.tests.functional.services.RabbitMQ`) and stops at
cleanup.
"""

import datetime
import logging
import os
import threading
from unittest import mock

import fixtures
import nova.conf
from nova import context as nova_context
from nova import crypto
from nova import objects
from nova import rpc
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.libvirt import base as libvirt_base
from nova import utils
import oslo_messaging
from oslo_messaging import conffixture as messaging_conffixture
from oslo_utils import uuidutils

from nova_vtpm.tests.functional import base
from nova_vtpm.tests.functional import services

CONF = nova.conf.CONF

#: Environment variable naming a broker to use instead of a private one.
RABBIT_URL_ENV = 'NOVA_VTPM_RABBIT_URL'

#: Where Nova's own functional tests keep their fake castellan back end.
FAKE_KEY_MANAGER = 'nova.tests.functional.libvirt.test_vtpm.FakeKeyManager'

#: The exchange Nova sends to: ``nova.config.parse_args`` sets the
#: ``control_exchange`` default to it (Nova's test ``ConfFixture`` runs it
#: too).
NOVA_EXCHANGE = 'nova'

TPM_SECRET_SECURITY_MODES = ('user', 'host', 'deployment')

_NOTIFIER_LOGGER = 'oslo_messaging.notify.notifier'


def register_messaging_opts(conf=CONF):
    """Register oslo.messaging's options on ``conf`` now.

    oslo.messaging registers them lazily (Nova's tests: in ``RPCFixture``,
    inside ``setUp``); ``flags()`` on them before that fails with
    ``NoSuchOptError``. Constructing oslo.messaging's ``ConfFixture``
    registers the very option objects that ``RPCFixture`` (which builds the
    same fixture) registers again later, a no-op then. Not
    ``oslo_messaging.opts.list_opts()``: it returns deep copies, and once
    Nova's test ``ConfFixture`` has run ``nova.config.parse_args`` (which
    changes the ``control_exchange`` default to ``nova``) a copy no longer
    equals the original: "DuplicateOptError: duplicate option:
    control_exchange".
    """
    messaging_conffixture.ConfFixture(conf)


class _ErrorCollector(logging.Handler):
    """Keeps the ERROR records of oslo.messaging's notifier.

    ``oslo_messaging.Notifier`` never raises: a failed send is logged
    ("Problem ... attempting to send to notification system") and dropped.
    """

    def __init__(self, records):
        super().__init__(level=logging.ERROR)
        self.records = records

    def emit(self, record):
        try:
            self.records.append(record.getMessage())
        except Exception:
            self.records.append(repr(record.msg))


class _TeeNotifier(object):
    """Stands for ``nova.rpc.NOTIFIER``: the fake first, then the real one.

    Only what Nova uses of a versioned notifier: ``prepare()``,
    ``is_enabled()`` and the priority methods. Anything else is the fake's.
    """

    _PRIORITIES = ('audit', 'debug', 'info', 'warn', 'warning', 'error',
                   'critical', 'sample')

    def __init__(self, fake, real, tee):
        self._fake = fake
        self._real = real
        self._tee = tee

    def prepare(self, publisher_id=None, **kwargs):
        fake = self._fake.prepare(publisher_id=publisher_id, **kwargs)
        # Exactly the publisher_id the fake records (a None publisher_id
        # would be None on a real _SubNotifier, not the parent's).
        real = self._real.prepare(publisher_id=fake.publisher_id)
        return _TeeNotifier(fake, real, self._tee)

    @property
    def publisher_id(self):
        return self._fake.publisher_id

    def is_enabled(self):
        return self._fake.is_enabled()

    def __getattr__(self, name):
        if name not in self._PRIORITIES:
            return getattr(self._fake, name)
        fake_notify = getattr(self._fake, name)
        real_notify = getattr(self._real, name)

        def notify(ctxt, event_type, payload):
            # The fake first: it raises for a notification leaked by an
            # earlier test case, which must not reach the broker either.
            fake_notify(ctxt, event_type=event_type, payload=payload)
            self._tee._sent(self._fake.publisher_id, name, event_type)
            real_notify(ctxt, event_type, payload)

        return notify


class RabbitNotificationTee(fixtures.Fixture):
    """Send every versioned notification to a real broker as well.

    Use after Nova's ``NotificationFixture`` (``self.notifier`` once
    ``_IntegratedTestBase.setUp`` has run): it wraps the notifier that
    fixture put in ``nova.rpc.NOTIFIER``, so Nova's in-memory waits keep
    working. Notifications emitted before this fixture is set up only reach
    the fake.

    :param transport: an oslo.messaging notification transport; default
        ``nova.rpc.NOTIFICATION_TRANSPORT``, i.e. what
        ``[oslo_messaging_notifications] transport_url`` gave ``rpc.init``.
    :param url: build a transport of this fixture's own from this URL
        instead (cleaned up with the fixture). Its exchange is
        ``CONF.control_exchange`` either way.
    :param topics: default ``[notifications] versioned_notifications_topics``.
    :param retry: connection retries per send: bounded, so that a dead
        broker fails a send (logged, in :attr:`errors`) instead of hanging
        the service that emits it; oslo.messaging's default is forever.

    :attr:`sent`: (publisher_id, priority, event_type) of each notification
    handed to the real notifier, in order. :attr:`errors`: the messages of
    the send failures oslo.messaging logged.
    """

    def __init__(self, transport=None, url=None, topics=None, retry=3):
        super().__init__()
        if transport is not None and url is not None:
            raise ValueError('give a transport or a url, not both')
        self._transport = transport
        self._url = url
        self._topics = topics
        self._retry = retry
        self._lock = threading.Lock()

    def _setUp(self):
        self.sent = []
        self.errors = []
        if self._url is not None:
            self.transport = oslo_messaging.get_notification_transport(
                CONF, url=self._url,
                allowed_remote_exmods=rpc.get_allowed_exmods())
            self.addCleanup(self.transport.cleanup)
        else:
            self.transport = self._transport or rpc.NOTIFICATION_TRANSPORT
        if self.transport is None:
            raise RuntimeError('no notification transport: nova.rpc.init() '
                               'has not run')
        topics = (self._topics or
                  CONF.notifications.versioned_notifications_topics)
        self.real_notifier = oslo_messaging.Notifier(
            self.transport,
            serializer=rpc.RequestContextSerializer(
                rpc.JsonPayloadSerializer()),
            driver='messagingv2', topics=list(topics), retry=self._retry)

        handler = _ErrorCollector(self.errors)
        notifier_log = logging.getLogger(_NOTIFIER_LOGGER)
        notifier_log.addHandler(handler)
        self.addCleanup(notifier_log.removeHandler, handler)

        fake = rpc.NOTIFIER
        if fake is None:
            raise RuntimeError('nova.rpc.NOTIFIER is not set')
        self.useFixture(fixtures.MonkeyPatch(
            'nova.rpc.NOTIFIER', _TeeNotifier(fake, self.real_notifier, self)))

    def _sent(self, publisher_id, priority, event_type):
        with self._lock:
            self.sent.append((publisher_id, priority.upper(), event_type))


class VTPMServersTestBase(libvirt_base.LibvirtMigrationMixin,
                          libvirt_base.ServersTestBase):
    """Nova with ``compute1`` and ``compute2``, both vTPM-capable.

    The API runs as in Nova's ``test_vtpm``: ``self.api`` is the non-admin
    user ``fake`` (the owner of the servers and of their key manager
    secrets), ``self.admin_api`` the admin, casts are real casts. The
    non-admin user may also request a destination host at boot
    (``compute:servers:create:requested_destination``), so that a test can
    place a server without the secret belonging to the admin.

    ``self.rabbit_url`` is the broker, ``self.rabbit`` the private
    :class:`~nova_vtpm.tests.functional.services.RabbitMQ` fixture or None,
    ``self.notification_tee`` the :class:`RabbitNotificationTee`,
    ``self.key_mgr`` the fake key manager.
    """

    #: Broker for the notifications; see the module's docstring.
    rabbit_url = None

    #: Hostnames of the computes, started in this order.
    COMPUTE_HOSTS = ('compute1', 'compute2')

    #: ``[libvirt] supported_tpm_secret_security`` of the computes.
    SUPPORTED_TPM_SECRET_SECURITY = TPM_SECRET_SECURITY_MODES

    #: ``[key_manager] backend``.
    KEY_MANAGER_BACKEND = FAKE_KEY_MANAGER

    # Reflect reality more for async API requests like migration (as
    # test_vtpm).
    CAST_AS_CALL = False
    # 2.25: block_migration='auto' for _live_migrate(); 2.34: asynchronous
    # pre-live-migration checks. Boots with a host use 2.74, see boot().
    microversion = '2.34'
    BOOT_MICROVERSION = '2.74'

    def setUp(self, rabbit_url=None):
        rabbit_url = (rabbit_url or self.rabbit_url or
                      os.environ.get(RABBIT_URL_ENV) or None)
        self.rabbit = None
        if rabbit_url is None:
            self.rabbit = self.useFixture(services.RabbitMQ())
            rabbit_url = self.rabbit.url
        self.rabbit_url = rabbit_url

        # Before Nova's setUp, which loads the API, see base.py.
        self.api_paste_config = self.useFixture(
            base.APIPasteConfigFixture()).path

        # Before Nova's setUp: RPCFixture's rpc.init() builds
        # nova.rpc.NOTIFICATION_TRANSPORT from these.
        register_messaging_opts(CONF)
        self.flags(transport_url=rabbit_url, driver=['messagingv2'],
                   retry=3, group='oslo_messaging_notifications')
        # Nova's test ConfFixture defaults to 'both'.
        self.flags(notification_format='versioned', group='notifications')

        # vTPM, as test_vtpm, and every secret security mode.
        self.flags(swtpm_enabled=True,
                   supported_tpm_secret_security=list(
                       self.SUPPORTED_TPM_SECRET_SECURITY),
                   group='libvirt')
        self.flags(backend=self.KEY_MANAGER_BACKEND, group='key_manager')
        # test_vtpm patches this for its test methods only; here the
        # computes start in setUp.
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.libvirt.virConnect._domain_capability_tpm',
            fakelibvirt.virConnect._domain_capability_tpm_supported))

        super().setUp()

        self.assertEqual(self.api_paste_config, CONF.wsgi.api_paste_config)
        self.assertEqual(
            rabbit_url, CONF.oslo_messaging_notifications.transport_url)
        self.assertEqual(NOVA_EXCHANGE, CONF.control_exchange)

        # swtpm users, groups and binaries on the host: not checked here.
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.driver.LibvirtDriver._check_vtpm_support'))
        self.key_mgr = crypto._get_key_manager()

        # 'deployment' secrets belong to the nova service user: make it a
        # user of its own, as test_vtpm does.
        def fake_get_nova_service_user_context():
            return nova_context.RequestContext(user_id='nova')

        self.useFixture(fixtures.MockPatch(
            'nova.context.get_nova_service_user_context',
            fake_get_nova_service_user_context))

        self.policy.set_rules(
            {'compute:servers:create:requested_destination': '@'},
            overwrite=False)

        self.notification_tee = self.useFixture(RabbitNotificationTee())

        for host in self.COMPUTE_HOSTS:
            self.start_compute(hostname=host)

    # Flavors and images.

    def create_vtpm_flavor(self, name=None, extra_specs=None, **kwargs):
        """Create a flavor (admin API); returns its id.

        :param extra_specs: e.g. ``{'hw:tpm_version': '2.0',
            'hw:tpm_model': 'tpm-crb', 'hw:tpm_secret_security': 'host'}``
        :param kwargs: more of ``_create_flavor``'s (memory_mb, vcpu, ...).
        """
        if extra_specs is None:
            extra_specs = {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb'}
        return self._create_flavor(name=name, extra_spec=dict(extra_specs),
                                   **kwargs)

    def create_image(self, properties=None, name=None):
        """Create an image in the fake Glance; returns its id.

        :param properties: e.g. ``{'hw_tpm_version': '2.0',
            'hw_tpm_model': 'tpm-crb'}``
        """
        image_id = uuidutils.generate_uuid()
        when = datetime.datetime(2011, 1, 1, 1, 2, 3)
        image = {
            'id': image_id,
            'name': name or 'image-%s' % image_id[:8],
            'created_at': when,
            'updated_at': when,
            'deleted_at': None,
            'deleted': False,
            'status': 'active',
            'is_public': False,
            'container_format': 'raw',
            'disk_format': 'raw',
            'size': 25165824,
            'min_ram': 0,
            'min_disk': 0,
            'protected': False,
            'visibility': 'public',
            'tags': [],
            'properties': dict(properties or {}),
        }
        self.glance.create(None, image)
        return image_id

    # Servers.

    def boot(self, flavor_id, host=None, image_props=None, image_id=None,
             name=None, networks='none', expected_state='ACTIVE', api=None):
        """Boot a server and wait for ``expected_state``; returns it.

        :param host: the compute to boot on (requested destination: the
            scheduler still checks it); None lets the scheduler choose.
        :param image_props: boot from a new image with these properties.
        :param image_id: boot from this image (default: the fake Glance's
            first image).
        :param networks: as the API's (microversion 2.74), default 'none'.
        :param api: default ``self.api``, the non-admin owner.
        """
        if image_props is not None:
            if image_id is not None:
                raise ValueError('give image_props or image_id, not both')
            image_id = self.create_image(image_props)
        api = api or self.api
        with utils.temporary_mutation(
                api, microversion=self.BOOT_MICROVERSION):
            return self._create_server(
                name=name, image_uuid=image_id, flavor_id=flavor_id,
                networks=networks, host=host, expected_state=expected_state,
                api=api)

    def get_server(self, server):
        """The server as the admin sees it (with its host)."""
        return self.admin_api.get_server(server['id'])

    def server_host(self, server):
        return self.get_server(server)['OS-EXT-SRV-ATTR:host']

    def get_instance(self, server):
        """The Instance object, from the cell database."""
        ctx = nova_context.get_admin_context()
        return objects.Instance.get_by_uuid(ctx, server['id'])

    def _n_versioned(self, event_type):
        return sum(1 for n in self.notifier.versioned_notifications
                   if n['event_type'] == event_type)

    def _wait_for_next(self, event_type, before, timeout=20.0):
        """Wait until ``event_type`` was seen more than ``before`` times."""
        self.notifier.wait_for_versioned_notifications(
            event_type, n_events=before + 1, timeout=timeout)

    def reboot(self, server, hard=False, expected_state='ACTIVE', api=None):
        """Reboot and wait for this reboot's ``instance.reboot.end``."""
        before = self._n_versioned('instance.reboot.end')
        server = self._reboot_server(server, hard=hard,
                                     expected_state=expected_state, api=api)
        if expected_state != 'ERROR':
            self._wait_for_next('instance.reboot.end', before)
        return server

    def _mock_migrate_disk(self):
        # As test_vtpm: the fake driver cannot move disks.
        return mock.patch(
            'nova.virt.libvirt.driver.LibvirtDriver'
            '.migrate_disk_and_power_off', return_value='{}')

    def resize(self, server, flavor_id):
        """Resize (to the other compute) and wait for VERIFY_RESIZE."""
        before = self._n_versioned('instance.resize.end')
        with self._mock_migrate_disk():
            server = self._resize_server(server, flavor_id)
        self._wait_for_next('instance.resize.end', before)
        return server

    def confirm_resize(self, server):
        with self._mock_migrate_disk():
            return self._confirm_resize(server)

    def revert_resize(self, server):
        before = self._n_versioned('instance.resize_revert.end')
        with self._mock_migrate_disk():
            server = self._revert_resize(server)
        self._wait_for_next('instance.resize_revert.end', before)
        return server

    def _live_migration_ends(self, server, host):
        """Set what LibvirtMigrationMixin's stub needs; returns dest."""
        source = self.server_host(server)
        if host is None:
            others = [h for h in self.computes if h != source]
            if len(others) != 1:
                raise ValueError('give the destination host: candidates %s'
                                 % others)
            dest = others[0]
        else:
            dest = host
        self.server = server
        self.src = self.computes[source]
        self.dest = self.computes[dest]
        return dest

    def live_migrate(self, server, host=None, api=None):
        """Live migrate (admin) and wait for the migration to complete.

        Also waits for ``instance.live_migration_post_dest.end``, the last
        step, on the destination. ``host`` is requested (not forced), None
        lets the scheduler choose (then the other compute must be the only
        candidate).
        """
        self._live_migration_ends(server, host)
        before = self._n_versioned('instance.live_migration_post_dest.end')
        server = self._live_migrate(server, api=api or self.admin_api,
                                    host=host)
        self._wait_for_next('instance.live_migration_post_dest.end', before)
        return server

    def live_migrate_fail(self, server, host=None, api=None):
        """Live migrate, make the libvirt job fail, wait for the rollback.

        The stub of test_vtpm's rollback test: the domain appears on the
        destination, then the job fails on the source. Waits for migration
        status ``failed`` and ``instance.live_migration_rollback_dest.end``.
        """
        self._live_migration_ends(server, host)

        def _migrate_fail_stub(domain, destination, params, flags):
            self.dest.driver._host.get_connection().createXML(
                params['destination_xml'],
                'fake-createXML-doesnt-care-about-flags')
            conn = self.src.driver._host.get_connection()
            dom = conn.lookupByUUIDString(self.server['id'])
            dom.fail_job()

        before = self._n_versioned(
            'instance.live_migration_rollback_dest.end')
        with mock.patch('nova.tests.fixtures.libvirt.Domain.migrateToURI3',
                        _migrate_fail_stub):
            server = self._live_migrate(
                server, migration_expected_state='failed',
                api=api or self.admin_api, host=host)
            self._wait_for_next('instance.live_migration_rollback_dest.end',
                                before)
        return server

    def delete(self, server):
        """Delete (as the owner) and wait until it is gone."""
        before = self._n_versioned('instance.delete.end')
        self._delete_server(server)
        self._wait_for_next('instance.delete.end', before)
