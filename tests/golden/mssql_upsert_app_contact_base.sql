DROP TABLE IF EXISTS #stage_app_contact_base;
SELECT TOP 0 [con_id], [app_id], [first_name], [flag] INTO #stage_app_contact_base FROM [migration].[app_contact_base]
UNION ALL SELECT TOP 0 [con_id], [app_id], [first_name], [flag] FROM [migration].[app_contact_base];
INSERT INTO #stage_app_contact_base ([con_id], [app_id], [first_name], [flag]) VALUES (?, ?, ?, ?);
SET IDENTITY_INSERT [migration].[app_contact_base] ON;
MERGE [migration].[app_contact_base] WITH (HOLDLOCK) AS tgt
USING #stage_app_contact_base AS src
ON tgt.[con_id] = src.[con_id]
WHEN MATCHED AND tgt.[app_id] = src.[app_id] THEN UPDATE SET tgt.[app_id] = src.[app_id], tgt.[first_name] = src.[first_name], tgt.[flag] = src.[flag]
WHEN NOT MATCHED BY TARGET THEN INSERT ([con_id], [app_id], [first_name], [flag]) VALUES (src.[con_id], src.[app_id], src.[first_name], src.[flag]);
SET IDENTITY_INSERT [migration].[app_contact_base] OFF;
DROP TABLE IF EXISTS #stage_app_contact_base;
