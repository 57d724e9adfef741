DROP TABLE IF EXISTS #stage_dead_letter;
SELECT TOP 0 [doc_key], [source], [app_id], [stage], [reason], [payload], [session_id], [attempts], [last_seen_at] INTO #stage_dead_letter FROM [migration].[dead_letter]
UNION ALL SELECT TOP 0 [doc_key], [source], [app_id], [stage], [reason], [payload], [session_id], [attempts], [last_seen_at] FROM [migration].[dead_letter];
INSERT INTO #stage_dead_letter ([doc_key], [source], [app_id], [stage], [reason], [payload], [session_id], [attempts], [last_seen_at]) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);
MERGE [migration].[dead_letter] WITH (HOLDLOCK) AS tgt
USING #stage_dead_letter AS src
ON tgt.[doc_key] = src.[doc_key]
WHEN MATCHED THEN UPDATE SET tgt.[source] = src.[source], tgt.[app_id] = src.[app_id], tgt.[stage] = src.[stage], tgt.[reason] = src.[reason], tgt.[payload] = src.[payload], tgt.[session_id] = src.[session_id], tgt.[attempts] = tgt.[attempts] + src.[attempts], tgt.[last_seen_at] = src.[last_seen_at]
WHEN NOT MATCHED BY TARGET THEN INSERT ([doc_key], [source], [app_id], [stage], [reason], [payload], [session_id], [attempts], [last_seen_at]) VALUES (src.[doc_key], src.[source], src.[app_id], src.[stage], src.[reason], src.[payload], src.[session_id], src.[attempts], src.[last_seen_at]);
DROP TABLE IF EXISTS #stage_dead_letter;
