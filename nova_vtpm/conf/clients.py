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

"""Credentials and endpoints of the OpenStack services nova-vtpm calls.

``[nova_vtpm_service]`` holds the keystoneauth1 authentication and session
options of nova-vtpm's service user (as ``[service_user]`` does for Nova);
``[nova_vtpm_nova]`` and ``[nova_vtpm_glance]`` hold the endpoint (adapter)
options of each service.
"""

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from nova_vtpm.conf import groups

SERVICE_GROUP = 'nova_vtpm_service'
NOVA_GROUP = 'nova_vtpm_nova'
GLANCE_GROUP = 'nova_vtpm_glance'

service_group = cfg.OptGroup(
    SERVICE_GROUP, title='nova-vtpm service user',
    help="""
The Keystone credentials nova-vtpm uses to call Nova (reconciliation, failure
actions) and Glance (image properties the notifications do not carry). The
user needs the admin role to list servers of all projects.
""")
nova_group = cfg.OptGroup(
    NOVA_GROUP, title='Nova API endpoint for nova-vtpm',
    help='How nova-vtpm finds the Compute API.')
glance_group = cfg.OptGroup(
    GLANCE_GROUP, title='Glance API endpoint for nova-vtpm',
    help='How nova-vtpm finds the Image API.')

NOVA_OPTS = [
    cfg.StrOpt('api_version', default='2.86',
               help='The Compute API microversion nova-vtpm asks for.'),
    cfg.IntOpt('page_size', default=1000, min=1,
               help='Servers per page when nova-vtpm lists all servers.'),
]


def register_opts(conf):
    conf.register_group(groups.fresh(service_group))
    ks_loading.register_session_conf_options(conf, SERVICE_GROUP)
    ks_loading.register_auth_conf_options(conf, SERVICE_GROUP)
    conf.register_group(groups.fresh(nova_group))
    ks_loading.register_adapter_conf_options(conf, NOVA_GROUP)
    conf.register_opts(NOVA_OPTS, group=nova_group)
    conf.register_group(groups.fresh(glance_group))
    ks_loading.register_adapter_conf_options(conf, GLANCE_GROUP)


def list_opts():
    auth_opts = ks_loading.get_auth_common_conf_options()
    plugin_opts = ks_loading.get_auth_plugin_conf_options('password')
    session_opts = ks_loading.get_session_conf_options()
    return {
        service_group: session_opts + auth_opts + plugin_opts,
        nova_group: ks_loading.get_adapter_conf_options(
            include_deprecated=False) + NOVA_OPTS,
        glance_group: ks_loading.get_adapter_conf_options(
            include_deprecated=False),
    }
