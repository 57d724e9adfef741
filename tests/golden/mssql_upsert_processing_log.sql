DROP TABLE IF EXISTS #stage_processing_log;
SELECT TOP 0 [app_id], [status], [stage], [failure_reason], [session_id], [processing_time], [content_hash], [app_id_start], [app_id_end] INTO #stage_processing_log FROM [migration].[processing_log]
UNION ALL SELECT TOP 0 [app_id], [status], [stage], [failure_reason], [session_id], [processing_time], [content_hash], [app_id_start], [app_id_end] FROM [migration].[processing_log];
INSERT INTO #stage_processing_log ([app_id], [status], [stage], [failure_reason], [session_id], [processing_time], [content_hash], [app_id_start], [app_id_end]) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);
MERGE [migration].[processing_log] WITH (HOLDLOCK) AS tgt
USING #stage_processing_log AS src
ON tgt.[app_id] = src.[app_id]
WHEN MATCHED THEN UPDATE SET tgt.[status] = src.[status], tgt.[stage] = src.[stage], tgt.[failure_reason] = src.[failure_reason], tgt.[session_id] = src.[session_id], tgt.[processing_time] = src.[processing_time], tgt.[content_hash] = src.[content_hash], tgt.[app_id_start] = src.[app_id_start], tgt.[app_id_end] = src.[app_id_end]
WHEN NOT MATCHED BY TARGET THEN INSERT ([app_id], [status], [stage], [failure_reason], [session_id], [processing_time], [content_hash], [app_id_start], [app_id_end]) VALUES (src.[app_id], src.[status], src.[stage], src.[failure_reason], src.[session_id], src.[processing_time], src.[content_hash], src.[app_id_start], src.[app_id_end]);
DROP TABLE IF EXISTS #stage_processing_log;
