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

"""nova-vtpm exceptions.

Every exception carries a message meant for the operator who reads it in a
log or a CLI at an awkward hour: it says what went wrong and, where there is
one, what to do next. Messages are built from ``msg_fmt`` and keyword
arguments, the way os-vif and Nova do it.
"""


class NovaVTPMException(Exception):
    """Base class for nova-vtpm errors.

    Subclasses set ``msg_fmt``; the keyword arguments given to the
    constructor fill it in. A caller may also pass a ready message.
    """

    msg_fmt = "An unknown nova-vtpm error occurred."

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                # A programming error in the caller must not hide the
                # original problem: fall back to the bare format.
                message = self.msg_fmt
        self.message = message
        super().__init__(message)

    def __str__(self):
        return self.message


class InvalidRequest(NovaVTPMException):
    msg_fmt = "Invalid vTPM request: %(reason)s"


class ConfigError(NovaVTPMException):
    msg_fmt = "Invalid nova-vtpm configuration: %(reason)s"


class PolicyFileError(ConfigError):
    msg_fmt = ("Cannot use the TPM policy file %(path)s: %(reason)s. Fix the "
               "file or the [nova_vtpm_attestation] tpm_policy_file option.")
