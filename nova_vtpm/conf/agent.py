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

import socket

from oslo_config import cfg

from nova_vtpm.conf import groups

GROUP_NAME = 'nova_vtpm_agent'

agent_group = cfg.OptGroup(
    GROUP_NAME,
    title='nova-vtpm agent options',
    help="""
The nova-vtpm agent consumes Nova's versioned notifications, records each
in the journal and offers it to the enabled hooks. Nova must send versioned
notifications: ``[notifications] notification_format = versioned`` (or
``both``) and ``[oslo_messaging_notifications] driver = messagingv2``. The
agent reads the same ``[oslo_messaging_notifications] transport_url`` (or
``[DEFAULT] transport_url``) as Nova.
""")

AGENT_OPTS = [
    cfg.StrOpt(
        'role',
        default='controller',
        choices=[
            ('controller', 'One of N agents that share the work: all of '
                           'them consume from one listener pool, each '
                           'event reaches one of them.'),
            ('compute', 'The agent of one compute host: it sees every '
                        'event and acts on the instances of its own host.'),
        ],
        help="""
What this agent is.

Related options:

* ``host``, ``pool``
"""),
    cfg.StrOpt(
        'host',
        default=socket.gethostname(),
        sample_default='<current hostname>',
        help="""
This agent's host name. A compute agent acts on the instances whose Nova
host is this name, so it must equal nova-compute's ``[DEFAULT] host``.
"""),
    cfg.ListOpt(
        'enabled_hooks',
        default=['inventory'],
        help="""
The hooks to run, by entry-point name in the ``nova_vtpm.hooks`` namespace,
in order. A hook named here that cannot be loaded stops the agent.
"""),
    cfg.StrOpt(
        'pool',
        help="""
The oslo.messaging listener pool. Agents in one pool share the events
(competing consumers).

Possible values:

* unset: ``nova-vtpm-controller`` for controllers (they share one pool),
  ``nova-vtpm-compute-<host>`` for compute agents (each sees every event);
* any pool name.
"""),
    cfg.StrOpt(
        'topic',
        default='versioned_notifications',
        help='The notification topic Nova sends versioned notifications to.'),
    cfg.StrOpt(
        'exchange',
        default='nova',
        help="The exchange of Nova's notifications."),
    cfg.IntOpt(
        'max_attempts',
        default=10, min=1,
        help="""
How many times a hook's work on an event is tried before it is recorded as
failed. ``nova-vtpm events retry`` starts it again.
"""),
    cfg.FloatOpt(
        'retry_base_delay',
        default=2.0, min=0.01,
        help='The first retry delay in seconds; it doubles with each attempt '
             '(with jitter) up to ``retry_max_delay``.'),
    cfg.FloatOpt(
        'retry_max_delay',
        default=300.0, min=0.01,
        help='The longest delay between two attempts, in seconds.'),
    cfg.FloatOpt(
        'claim_lease',
        default=300.0, min=1,
        help="""
Seconds an agent holds a claim on work it runs. Work of an agent that died
is taken up by another agent (sharing the journal) after this time.
"""),
    cfg.FloatOpt(
        'poll_interval',
        default=5.0, min=0.05,
        help='The longest time in seconds the worker sleeps before looking '
             'for work that became due (new events wake it at once).'),
    cfg.IntOpt(
        'reconcile_interval',
        default=600, min=0,
        help="""
Seconds between two reconciliations with Nova (which need the
``[nova_vtpm_nova]`` credentials). 0 disables periodic reconciliation;
``nova-vtpm reconcile --once`` still works.
"""),
    cfg.IntOpt(
        'executor_threads',
        default=4, min=1,
        help="""
Threads of the notification listener. 4: with 16 the intake was no faster
and used more CPU per event (benchmarks/events.py), as the threads contend
for the GIL and for the journal's one writer.
"""),
]


def register_opts(conf):
    conf.register_group(groups.fresh(agent_group))
    conf.register_opts(AGENT_OPTS, group=GROUP_NAME)


def list_opts():
    return {agent_group: AGENT_OPTS}
