"""Errors that send a document to the dead letter (never to the runner)."""


class StageError(Exception):
    """A document failed a stage. `reason` is safe to log: it never contains row values."""

    def __init__(self, stage, reason):
        super().__init__(f'{stage}: {reason}')
        self.stage = stage
        self.reason = reason
