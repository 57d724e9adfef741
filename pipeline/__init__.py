"""The launcher: options and configuration, the graph of named transforms, the orchestration of a job, the
reports, and the command line (`python -m pipeline`)."""
import logging

__version__ = '0.2.0'


class _DropImportNoise(logging.Filter):
    """Beam warns on import about Google Cloud client libraries this product never uses."""

    def filter(self, record):
        return 'apitools not found' not in str(record.msg)


logging.getLogger().addFilter(_DropImportNoise())
