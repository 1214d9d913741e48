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

"""The vTPM state guard's library: swtpm state on a compute host.

libvirt keeps each vTPM's state in ``<swtpm root>/<instance uuid>/tpm2``
(``/var/lib/libvirt/swtpm`` by default), encrypted with a key derived from
the instance's libvirt secret. This package reads that state without
touching it:

* :mod:`~nova_vtpm.swtpm.keys`: the key swtpm derives from the secret;
* :mod:`~nova_vtpm.swtpm.state`: facts about a state directory and the
  identity (EK certificate, EK public key) of the TPM it holds, read from a
  private copy by a private swtpm;
* :mod:`~nova_vtpm.swtpm.backup`: ciphertext backups in a pluggable store,
  verification, retention and a restore that proves its result;
* :mod:`~nova_vtpm.swtpm.capabilities`: what the host's swtpm can do.

Nothing here decrypts state in Python, writes the secret or the key to disk,
or modifies a state directory except :func:`~nova_vtpm.swtpm.backup.restore`.
"""
