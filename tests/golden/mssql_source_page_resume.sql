SELECT TOP (50) [app_id] FROM [migration].[app_xml] WHERE [app_id] IS NOT NULL AND [app_id] % ? = ? AND [app_id] > ? AND [app_id] <= ? ORDER BY [app_id];
SELECT [app_id], LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', CAST([xml] AS nvarchar(max))), 2)) FROM [migration].[app_xml] WHERE [app_id] IS NOT NULL AND [app_id] % ? = ? AND [app_id] IN (?, ?) ORDER BY [app_id];
SELECT [app_id], LOWER(CONVERT(varchar(64), HASHBYTES('SHA2_256', CAST([xml] AS nvarchar(max))), 2)), [xml] FROM [migration].[app_xml] WHERE [app_id] IS NOT NULL AND [app_id] % ? = ? AND [app_id] IN (?, ?, ?) ORDER BY [app_id];
