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


def describe_exception(exc):
    """An unexpected exception as '<type> at <file>:<line>' (its innermost frame): names the place, never the data
    it saw (exception messages may quote values)."""
    tb = exc.__traceback__
    where = ''
    while tb is not None:
        where = f'{tb.tb_frame.f_code.co_filename.rsplit("/", 1)[-1]}:{tb.tb_lineno}'
        tb = tb.tb_next
    return f'{type(exc).__name__} at {where}' if where else type(exc).__name__
