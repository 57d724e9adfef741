DROP TABLE IF EXISTS #stage_app_contact_address;
SELECT TOP 0 [con_id], [address_type_enum], [city] INTO #stage_app_contact_address FROM [migration].[app_contact_address]
UNION ALL SELECT TOP 0 [con_id], [address_type_enum], [city] FROM [migration].[app_contact_address];
INSERT INTO #stage_app_contact_address ([con_id], [address_type_enum], [city]) VALUES (?, ?, ?);
MERGE [migration].[app_contact_address] WITH (HOLDLOCK) AS tgt
USING #stage_app_contact_address AS src
ON tgt.[con_id] = src.[con_id] AND tgt.[address_type_enum] = src.[address_type_enum]
WHEN MATCHED THEN UPDATE SET tgt.[city] = src.[city]
WHEN NOT MATCHED BY TARGET THEN INSERT ([con_id], [address_type_enum], [city]) VALUES (src.[con_id], src.[address_type_enum], src.[city]);
DROP TABLE IF EXISTS #stage_app_contact_address;
