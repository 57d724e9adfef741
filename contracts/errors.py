"""Errors of the contracts package.

Messages are safe to log: they name contract entries, tables, columns and keys, never row values or personal data.
"""


class ContractError(Exception):
    """A mapping contract cannot be loaded or is invalid.

    The message names the entry, e.g. ``mappings[17] (app_pricing_cc.campaign_num): key 'data_type': unknown type
    'strng'``. When several problems are found they are all listed (one per line); ``errors`` holds them as a list.
    """

    def __init__(self, message, errors=None):
        super().__init__(message)
        self.errors = list(errors) if errors else [message]


class MappingError(Exception):
    """A document cannot be mapped at all (no application element, no app_id, nothing mapped).

    The message never contains row values.
    """
