ALTER TABLE [migration].[processing_log] ADD [content_hash] varchar(64) NULL;
ALTER TABLE [migration].[dead_letter] ADD [attempts] int NOT NULL DEFAULT 1;
DELETE FROM [migration].[processing_log] WHERE [log_id] NOT IN (SELECT MAX([log_id]) FROM [migration].[processing_log] GROUP BY [app_id]);
SELECT [id], [source], [created_at] FROM [migration].[dead_letter] ORDER BY [id];
UPDATE [migration].[dead_letter] SET [doc_key] = ?, [attempts] = ?, [created_at] = COALESCE(?, [created_at]), [last_seen_at] = ? WHERE [id] = ?;
DELETE FROM [migration].[dead_letter] WHERE [id] IN (?, ?, ?);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ux_processing_log_app_id' AND object_id = OBJECT_ID(N'[migration].[processing_log]'))
CREATE UNIQUE INDEX [ux_processing_log_app_id] ON [migration].[processing_log] ([app_id]);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_processing_log_content_hash' AND object_id = OBJECT_ID(N'[migration].[processing_log]'))
CREATE INDEX [ix_processing_log_content_hash] ON [migration].[processing_log] ([content_hash]);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ux_dead_letter_doc_key' AND object_id = OBJECT_ID(N'[migration].[dead_letter]'))
CREATE UNIQUE INDEX [ux_dead_letter_doc_key] ON [migration].[dead_letter] ([doc_key]);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_dead_letter_app_id' AND object_id = OBJECT_ID(N'[migration].[dead_letter]'))
CREATE INDEX [ix_dead_letter_app_id] ON [migration].[dead_letter] ([app_id]);
DELETE FROM [migration].[app_contact_address] WHERE [con_id] IN (SELECT [con_id] FROM [migration].[app_contact_base] WHERE [app_id] IN (?, ?, ?));
DELETE FROM [migration].[app_contact_base] WHERE [app_id] IN (?, ?, ?);
DELETE FROM [migration].[app_base] WHERE [app_id] IN (?, ?, ?);
