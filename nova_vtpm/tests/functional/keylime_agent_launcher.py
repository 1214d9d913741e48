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

"""Run keylime 6.4.3's Python agent against a Keylime 7.x registrar.

Run with the Python of the virtualenv holding keylime 6.4.3 (not
nova-vtpm's), with ``KEYLIME_CONFIG`` naming the agent's configuration::

    KEYLIME_CONFIG=<agent.conf> <agent venv>/bin/python \\
        keylime_agent_launcher.py

A 7.x registrar refuses the 6.4.3 agent's registration twice (HTTP 400),
for reasons of protocol, not of trust:

1. the agent posts its JSON bodies (``POST /v*/agents/<id>`` and
   ``PUT /v*/agents/<id>/activate``) without ``Content-Type:
   application/json``, and 7.x ignores such a body;
2. it leaves out ``ek_tpm`` when it has an EK certificate, and 7.x
   requires it (and checks that it matches the certificate).

This launcher wraps the agent's HTTP client to add both, without changing
the installed package. It also reads ``KEYLIME_CONFIG`` again after the
system-wide files (6.4.3 merges ``/etc/keylime.conf`` and
``~/.config/keylime.conf`` over it), so that the test's settings win.

This file must stay importable by that other Python: it imports nothing
from nova-vtpm.
"""

import os
import re
import sys

# Keylime's config module reads its files when first imported.
from keylime import config  # noqa: E402

if os.environ.get('KEYLIME_CONFIG'):
    config.get_config().read(os.environ['KEYLIME_CONFIG'])

from keylime import json  # noqa: E402  (its dumps() handles bytes)
from keylime import registrar_client  # noqa: E402
from keylime import requests_client  # noqa: E402

_REGISTER_PATH = re.compile(r'^/v[0-9.]+/agents/[^/]+$')
_state = {}

_register = registrar_client.doRegisterAgent


def _do_register_agent(registrar_ip, registrar_port, agent_id, ek_tpm,
                       *args, **kwargs):
    # Remember the EK public area for the POST below.
    _state['ek_tpm'] = ek_tpm
    return _register(registrar_ip, registrar_port, agent_id, ek_tpm,
                     *args, **kwargs)


def _json_request(method_name):
    original = getattr(requests_client.RequestsClient, method_name)

    def wrapper(self, url, **kwargs):
        headers = dict(kwargs.pop('headers', None) or {})
        headers.setdefault('Content-Type', 'application/json')
        data = kwargs.get('data')
        if (method_name == 'post' and isinstance(data, str)
                and _REGISTER_PATH.match(url) and _state.get('ek_tpm')):
            body = json.loads(data)
            if not body.get('ek_tpm'):
                body['ek_tpm'] = _state['ek_tpm']
                kwargs['data'] = json.dumps(body)
        return original(self, url, headers=headers, **kwargs)

    wrapper.__name__ = method_name
    return wrapper


registrar_client.doRegisterAgent = _do_register_agent
requests_client.RequestsClient.post = _json_request('post')
requests_client.RequestsClient.put = _json_request('put')


def main():
    from keylime.cmd import agent
    agent.main()


if __name__ == '__main__':
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:
        sys.stderr.write('keylime agent failed: %s: %s\n'
                         % (type(e).__name__, e))
        raise
