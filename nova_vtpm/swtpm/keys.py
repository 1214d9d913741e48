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

"""The key swtpm derives from a vTPM secret.

libvirt hands swtpm the instance's secret through ``--key pwdfd=N`` (and
``--migration-key``); swtpm derives the AES key with PBKDF2-HMAC-SHA512,
salt ``swtpm``, 1000 iterations (``kdf=pbkdf2``, its default), as long as
the cipher's key: 32 bytes for ``aes-256-cbc``, 16 for ``aes-cbc``.

Neither the secret nor the key is ever logged or written to a file here.
"""

import hashlib

KDF_HASH = 'sha512'
KDF_SALT = b'swtpm'
KDF_ITERATIONS = 1000

# swtpm's cipher names -> key length in bytes.
CIPHERS = {
    'aes-256-cbc': 32,
    'aes-cbc': 16,
    'aes-128-cbc': 16,
}
DEFAULT_CIPHER = 'aes-256-cbc'


def _as_bytes(secret):
    if isinstance(secret, str):
        return secret.encode('utf-8')
    if isinstance(secret, (bytes, bytearray, memoryview)):
        return bytes(secret)
    raise TypeError('a vTPM secret is bytes or str, not %s'
                    % type(secret).__name__)


def derive_key(secret, key_bytes=32):
    """Return the AES key swtpm derives from ``secret``.

    :param secret: the libvirt secret value (bytes; a str is UTF-8
        encoded), exactly as libvirt writes it to swtpm's ``pwdfd``.
    :param key_bytes: 32 (aes-256-cbc, what libvirt uses) or 16.
    :returns: the raw key.
    """
    if key_bytes not in (16, 32):
        raise ValueError('swtpm uses 16 or 32 byte keys, not %r'
                         % (key_bytes,))
    return hashlib.pbkdf2_hmac(KDF_HASH, _as_bytes(secret), KDF_SALT,
                               KDF_ITERATIONS, key_bytes)


def key_bytes_for(cipher):
    """The key length swtpm uses for ``cipher`` (a swtpm mode name)."""
    try:
        return CIPHERS[cipher]
    except KeyError:
        raise ValueError('unknown swtpm cipher %r (known: %s)'
                         % (cipher, ', '.join(sorted(CIPHERS))))
