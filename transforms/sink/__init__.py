"""The sink, one module per job: `writer` (the pure core: upsert, ownership, value checks, retry, isolation),
`bundle` (one connection per bundle), `write` (WriteToSql: FK tiers, GroupIntoBatches per table), `owned`
(replacing a re-migrated document's rows, removing a failed document's partial rows), `ledger` (processing_log)
and `dead_letters` (dead_letter)."""
from transforms.sink.dead_letters import WriteDeadLetters
from transforms.sink.ledger import (DEAD_LETTER_COLUMNS, LEDGER_COLUMNS, WriteLedger, hash_prefix, keyed_view,
                                    read_success_hashes, read_success_ids, read_unhashed_success_ids)
from transforms.sink.owned import delete_plan
from transforms.sink.write import WriteBatchesFn, WriteToSql
from transforms.sink.writer import BatchResult, SinkError, SinkUnavailable, Writer, write_batch
from transforms.sql.ledger import doc_key
from transforms.sql.retry import RetryPolicy

__all__ = ['BatchResult', 'DEAD_LETTER_COLUMNS', 'LEDGER_COLUMNS', 'RetryPolicy', 'SinkError', 'SinkUnavailable',
           'WriteBatchesFn', 'WriteDeadLetters', 'WriteLedger', 'WriteToSql', 'Writer', 'delete_plan', 'doc_key',
           'hash_prefix', 'keyed_view', 'read_success_hashes', 'read_success_ids', 'read_unhashed_success_ids',
           'write_batch']
