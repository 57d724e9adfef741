"""Errors that send a document to the dead letter (never to the runner)."""


class StageError(Exception):
    """A document failed a stage. `reason` is safe to log: it never contains row values."""

    def __init__(self, stage, reason, app_id=None):
        super().__init__(f'{stage}: {reason}')
        self.stage = stage
        self.reason = reason
        self.app_id = app_id      # when the document's app_id was known before it failed
