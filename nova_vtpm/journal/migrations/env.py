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

from alembic import context

from nova_vtpm.journal import models


def run_migrations():
    connectable = context.config.attributes.get('connection')
    with connectable.begin() if not connectable.in_transaction() else \
            _nullcontext():
        context.configure(connection=connectable,
                          target_metadata=models.metadata,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


run_migrations()
