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

"""A private swtpm and the few TPM 2.0 commands the state guard needs.

:class:`SwtpmProcess` runs ``swtpm socket`` on a state directory with its
TPM and control channels on socket pairs (``--fd`` and ``--ctrl
type=unixio,clientfd=``): no TCP port, no socket file, nothing
another process can connect to. The key goes through a pipe
(``--key fd=``), never a file.

The TPM commands are marshalled here rather than run with tpm2-tools: each
tpm2-tools command costs a process and a handful of connections (about
40-60 ms each with swtpm 0.7.1 and tpm2-tools 5.4), where the guard needs
a whole identity read in well under 100 ms. Only read commands are sent,
plus TPM2_Startup/TPM2_Shutdown and, when a TPM has no persistent EK, a
TPM2_CreatePrimary of the standard EK template (the same public key that
``tpm2_createek -G rsa`` gives).
"""

import os
import socket
import struct
import subprocess

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

SWTPM = 'swtpm'

# Control channel commands (swtpm's tpm_ioctl.h).
CMD_INIT = 0x02
CMD_SHUTDOWN = 0x03
CTRL_NAMES = {CMD_INIT: 'PTM_INIT', CMD_SHUTDOWN: 'PTM_SHUTDOWN'}

# TPM 2.0 constants (TCG TPM 2.0 Part 2).
ST_NO_SESSIONS = 0x8001
ST_SESSIONS = 0x8002
CC_NV_READ = 0x0000014E
CC_CREATE_PRIMARY = 0x00000131
CC_STARTUP = 0x00000144
CC_SHUTDOWN = 0x00000145
CC_FLUSH_CONTEXT = 0x00000165
CC_NV_READ_PUBLIC = 0x00000169
CC_READ_PUBLIC = 0x00000173
CC_GET_CAPABILITY = 0x0000017A
SU_CLEAR = 0x0000
RS_PW = 0x40000009
RH_OWNER = 0x40000001
RH_ENDORSEMENT = 0x4000000B
RH_PLATFORM = 0x4000000C
CAP_HANDLES = 0x00000001
CAP_TPM_PROPERTIES = 0x00000006
PT_NV_BUFFER_MAX = 0x0000012C
HR_NV_INDEX = 0x01000000
HR_PERSISTENT = 0x81000000
TPMA_NV_PPREAD = 1 << 16
TPMA_NV_OWNERREAD = 1 << 17
TPMA_NV_AUTHREAD = 1 << 18
RC_INITIALIZE = 0x00000100

# The TCG EK Credential Profile's RSA 2048 EK template (template L-1):
# fixedTPM, fixedParent, sensitiveDataOrigin, adminWithPolicy, restricted,
# decrypt; policy = PolicySecret(TPM_RH_ENDORSEMENT); AES-128-CFB; zero
# unique. swtpm_setup --createek uses it for the RSA EK.
EK_RSA_POLICY = bytes.fromhex(
    '837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa')
EK_RSA_TEMPLATE = (
    struct.pack('>HHI', 0x0001, 0x000B, 0x000300B2)
    + struct.pack('>H', len(EK_RSA_POLICY)) + EK_RSA_POLICY
    + struct.pack('>HHHHHI', 0x0006, 128, 0x0043, 0x0010, 2048, 0)
    + struct.pack('>H', 256) + bytes(256))


class ProtocolError(Exception):
    """The TPM or the control channel answered badly, or not at all.

    ``client_error`` is the message a client tool would have printed, in
    swtpm_ioctl's words for the control channel (``TPM result from
    PTM_INIT: 0x101``). ``rc`` is the TPM result code, if any.
    """

    def __init__(self, client_error, rc=None):
        super().__init__(client_error)
        self.client_error = client_error
        self.rc = rc


def _recv_exact(sock, count):
    chunks = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise ProtocolError('connection closed by swtpm')
        chunks.append(chunk)
        count -= len(chunk)
    return b''.join(chunks)


class Reader(object):
    """Unmarshal big-endian TPM structures from a byte string."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, count):
        if self.pos + count > len(self.data):
            raise ProtocolError('short TPM response')
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack('>H', self.take(2))[0]

    def u32(self):
        return struct.unpack('>I', self.take(4))[0]

    def tpm2b(self):
        return self.take(self.u16())


def _tpm2b(data):
    return struct.pack('>H', len(data)) + data


def _password_auth():
    # TPMS_AUTH_COMMAND for an empty password: handle, nonce, attrs, hmac.
    auth = struct.pack('>IHBH', RS_PW, 0, 0, 0)
    return struct.pack('>I', len(auth)) + auth


class SwtpmProcess(object):
    """One ``swtpm socket --tpm2`` on a state directory, and its channels.

    Use as a context manager; on exit the TPM is shut down in order
    (TPM2_Shutdown, then PTM_SHUTDOWN) and the process reaped, or killed
    by its pid when it does not exit in time.

    :param state_path: the state directory swtpm opens (a private copy).
    :param work_dir: a private directory for swtpm's log.
    :param key: the raw AES key, or None for an unencrypted state.
    :param cipher: swtpm's mode name for the key.
    :param timeout: seconds allowed for each command and for the exit.
    :param swtpm: the swtpm binary.
    :param transport: ``unix`` (socket pairs, the default) or ``tcp``
        (127.0.0.1; see :meth:`_channels`).
    """

    def __init__(self, state_path, work_dir, key=None,
                 cipher='aes-256-cbc', timeout=10.0, swtpm=SWTPM,
                 transport='unix'):
        self.state_path = state_path
        self.log_path = os.path.join(work_dir, 'swtpm.log')
        self.stderr_path = os.path.join(work_dir, 'swtpm.stderr')
        self.key = key
        self.cipher = cipher
        self.timeout = timeout
        self.swtpm = swtpm
        self.transport = transport
        self.proc = None
        self.data = None
        self.ctrl = None
        self.started_tpm = False
        # Set when swtpm stopped answering: no polite shutdown then.
        self.hung = False

    # -- process -----------------------------------------------------------

    def _channels(self):
        """(data parent, data child, ctrl parent, ctrl child, ctrl arg).

        ``unix``: two socket pairs; nothing listens anywhere. ``tcp``: the
        same over 127.0.0.1 for hosts whose AppArmor profile for swtpm
        allows inet streams but not unix streams with an unconfined peer
        (Ubuntu's): the data connection is made before swtpm starts; the
        control channel needs a listening socket (swtpm takes only a
        listening TCP control socket), which this process connects to at
        once, so it is first in the queue, and swtpm serves one control
        client at a time.
        """
        if self.transport == 'unix':
            data_parent, data_child = socket.socketpair()
            ctrl_parent, ctrl_child = socket.socketpair()
            return (data_parent, data_child, ctrl_parent, ctrl_child,
                    'type=unixio,clientfd=%d' % ctrl_child.fileno())
        if self.transport != 'tcp':
            raise ValueError('transport is unix or tcp, not %r'
                             % self.transport)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(('127.0.0.1', 0))
            listener.listen(1)
            data_parent = socket.create_connection(listener.getsockname(),
                                                   timeout=self.timeout)
            data_child, _ = listener.accept()
        ctrl_child = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ctrl_child.bind(('127.0.0.1', 0))
        ctrl_child.listen(1)
        ctrl_parent = socket.create_connection(ctrl_child.getsockname(),
                                               timeout=self.timeout)
        return (data_parent, data_child, ctrl_parent, ctrl_child,
                'type=tcp,fd=%d' % ctrl_child.fileno())

    def start(self):
        data_parent, data_child, ctrl_parent, ctrl_child, ctrl_arg = (
            self._channels())
        key_r = key_w = None
        fds = [data_child.fileno(), ctrl_child.fileno()]
        cmd = [self.swtpm, 'socket', '--tpm2',
               '--tpmstate', 'dir=%s,mode=0600' % self.state_path,
               '--fd', str(data_child.fileno()),
               '--ctrl', ctrl_arg,
               '--log', 'file=%s,level=1' % self.log_path]
        try:
            if self.key is not None:
                key_r, key_w = os.pipe()
                # 16 or 32 bytes: far below a pipe's buffer.
                os.write(key_w, self.key)
                os.close(key_w)
                key_w = None
                fds.append(key_r)
                cmd += ['--key', 'fd=%d,format=binary,mode=%s'
                        % (key_r, self.cipher)]
            with open(self.stderr_path, 'wb') as stderr:
                try:
                    self.proc = subprocess.Popen(
                        cmd, stdin=subprocess.DEVNULL, stdout=stderr,
                        stderr=stderr, pass_fds=fds, close_fds=True)
                except OSError as exc:
                    data_parent.close()
                    ctrl_parent.close()
                    raise ProtocolError('cannot run %s: %s'
                                        % (self.swtpm, exc))
        finally:
            data_child.close()
            ctrl_child.close()
            for fd in (key_r, key_w):
                if fd is not None:
                    os.close(fd)
        self.data = data_parent
        self.ctrl = ctrl_parent
        self.data.settimeout(self.timeout)
        self.ctrl.settimeout(self.timeout)
        LOG.debug('Started swtpm (pid %d) on %s', self.proc.pid,
                  self.state_path)
        return self

    def log_text(self):
        """swtpm's log and stderr, as text (empty if none)."""
        parts = []
        for path in (self.log_path, self.stderr_path):
            try:
                with open(path, 'rb') as f:
                    parts.append(f.read().decode('utf-8', 'replace'))
            except OSError:
                pass
        lines = [line.strip() for part in parts for line in part.splitlines()]
        return '\n'.join(line for line in lines if line)

    def stop(self):
        """Shut the TPM down in order, reap the process; kill it if need be.

        Never raises: this runs on error paths.
        """
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.hung:
            LOG.warning('swtpm (pid %d) stopped answering, killing it',
                        self.proc.pid)
            self.proc.kill()
        try:
            if self.started_tpm and self.data is not None and not self.hung:
                try:
                    self.command(CC_SHUTDOWN, struct.pack('>H', SU_CLEAR))
                except (ProtocolError, OSError):
                    pass
            if self.ctrl is not None and not self.hung:
                try:
                    self.control(CMD_SHUTDOWN)
                except (ProtocolError, OSError):
                    pass
        finally:
            for sock in (self.data, self.ctrl):
                if sock is not None:
                    sock.close()
            self.data = self.ctrl = None
            try:
                self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                LOG.warning('swtpm (pid %d) did not exit within %.1f s, '
                            'killing it', self.proc.pid, self.timeout)
                self.proc.kill()
                self.proc.wait()
            LOG.debug('swtpm (pid %d) exited with %s', self.proc.pid,
                      self.proc.returncode)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # -- control channel ---------------------------------------------------

    def control(self, cmd, payload=b''):
        """Send a control channel command; return its payload.

        :raises ProtocolError: on a non-zero result, worded as
            swtpm_ioctl words it.
        """
        name = CTRL_NAMES.get(cmd, 'command 0x%x' % cmd)
        try:
            self.ctrl.sendall(struct.pack('>I', cmd) + payload)
            result = struct.unpack('>I', _recv_exact(self.ctrl, 4))[0]
        except socket.timeout:
            self.hung = True
            raise ProtocolError('no answer to %s within %.1f s'
                                % (name, self.timeout))
        except OSError as exc:
            raise ProtocolError('%s failed: %s' % (name, exc))
        except ProtocolError as exc:
            raise ProtocolError('%s failed: %s' % (name, exc))
        if result:
            raise ProtocolError('TPM result from %s: 0x%x' % (name, result),
                                rc=result)

    def init(self):
        """PTM_INIT: load the state and start libtpms."""
        self.control(CMD_INIT, struct.pack('>I', 0))

    # -- TPM commands ------------------------------------------------------

    def command(self, cc, body=b'', tag=ST_NO_SESSIONS):
        """Send one TPM 2.0 command; return the response after its header.

        :raises ProtocolError: on a non-zero response code.
        """
        size = 10 + len(body)
        try:
            self.data.sendall(struct.pack('>HII', tag, size, cc) + body)
            header = _recv_exact(self.data, 10)
            _tag, rsize, rc = struct.unpack('>HII', header)
            if rsize < 10 or rsize > 65536:
                raise ProtocolError('bad TPM response size %d' % rsize)
            rest = _recv_exact(self.data, rsize - 10)
        except socket.timeout:
            self.hung = True
            raise ProtocolError('no TPM response to command 0x%x within '
                                '%.1f s' % (cc, self.timeout))
        except OSError as exc:
            raise ProtocolError('TPM command 0x%x failed: %s' % (cc, exc))
        if rc:
            raise ProtocolError('TPM command 0x%x returned 0x%x' % (cc, rc),
                                rc=rc)
        return rest

    def startup(self):
        """TPM2_Startup(CLEAR); an already started TPM is fine."""
        try:
            self.command(CC_STARTUP, struct.pack('>H', SU_CLEAR))
        except ProtocolError as exc:
            if exc.rc != RC_INITIALIZE:
                raise
        self.started_tpm = True

    def get_handles(self, first):
        """All handles of the range that starts at ``first``."""
        handles = []
        start = first
        limit = (first & 0xFF000000) + 0x01000000
        for _ in range(64):
            resp = Reader(self.command(
                CC_GET_CAPABILITY,
                struct.pack('>III', CAP_HANDLES, start, 128)))
            more = resp.u8()
            resp.u32()  # capability
            count = resp.u32()
            page = [resp.u32() for _ in range(count)]
            handles.extend(h for h in page if h < limit)
            if not more or not page or page[-1] + 1 >= limit:
                break
            start = page[-1] + 1
        return handles

    def nv_buffer_max(self):
        resp = Reader(self.command(
            CC_GET_CAPABILITY,
            struct.pack('>III', CAP_TPM_PROPERTIES, PT_NV_BUFFER_MAX, 1)))
        resp.u8()
        resp.u32()
        if resp.u32() and resp.u32() == PT_NV_BUFFER_MAX:
            return resp.u32()
        return 512

    def nv_read_public(self, index):
        """(attributes, data size) of an NV index."""
        resp = Reader(self.command(CC_NV_READ_PUBLIC,
                                   struct.pack('>I', index)))
        public = Reader(resp.tpm2b())
        public.u32()  # nvIndex
        public.u16()  # nameAlg
        attributes = public.u32()
        public.tpm2b()  # authPolicy
        return attributes, public.u16()

    def nv_read(self, index, chunk=None):
        """The whole content of an NV index, read with an empty password."""
        attributes, size = self.nv_read_public(index)
        if attributes & TPMA_NV_AUTHREAD:
            auth_handle = index
        elif attributes & TPMA_NV_OWNERREAD:
            auth_handle = RH_OWNER
        elif attributes & TPMA_NV_PPREAD:
            auth_handle = RH_PLATFORM
        else:
            raise ProtocolError('NV index 0x%08x is not readable with a '
                                'password (attributes 0x%08x)'
                                % (index, attributes))
        chunk = chunk or self.nv_buffer_max()
        out = []
        offset = 0
        while offset < size:
            count = min(chunk, size - offset)
            resp = Reader(self.command(
                CC_NV_READ,
                struct.pack('>II', auth_handle, index) + _password_auth()
                + struct.pack('>HH', count, offset),
                tag=ST_SESSIONS))
            resp.u32()  # parameterSize
            data = resp.tpm2b()
            if not data:
                raise ProtocolError('empty NV read at offset %d' % offset)
            out.append(data)
            offset += len(data)
        return b''.join(out)

    def read_public(self, handle):
        """The TPMT_PUBLIC area of a loaded or persistent object."""
        resp = Reader(self.command(CC_READ_PUBLIC, struct.pack('>I', handle)))
        return resp.tpm2b()

    def create_ek_rsa(self):
        """TPM2_CreatePrimary of the RSA EK template; its TPMT_PUBLIC.

        The transient object is flushed again. Like ``tpm2_createek``.
        """
        body = (struct.pack('>I', RH_ENDORSEMENT) + _password_auth()
                + _tpm2b(struct.pack('>HH', 0, 0))     # inSensitive
                + _tpm2b(EK_RSA_TEMPLATE)             # inPublic
                + struct.pack('>H', 0)                # outsideInfo
                + struct.pack('>I', 0))               # creationPCR
        resp = Reader(self.command(CC_CREATE_PRIMARY, body, tag=ST_SESSIONS))
        handle = resp.u32()
        resp.u32()  # parameterSize
        public = resp.tpm2b()
        try:
            self.command(CC_FLUSH_CONTEXT, struct.pack('>I', handle))
        except ProtocolError:
            LOG.debug('Could not flush the transient EK 0x%08x', handle)
        return public
