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

"""Keylime enrolment: REST clients, EK trust store and EK verification.

* :mod:`nova_vtpm.keylime.client`: the registrar and verifier REST APIs
  (mTLS, API version negotiation, bounded retries, typed errors);
* :mod:`nova_vtpm.keylime.trust`: a directory of CA certificates (each
  compute host's swtpm-localca root and intermediate);
* :mod:`nova_vtpm.keylime.ek`: whether a registered EK really is the vTPM
  of a given instance (chain, CN binding, public key match).
"""
