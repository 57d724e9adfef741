IF SCHEMA_ID(N'migration') IS NULL
EXEC(N'CREATE SCHEMA [migration]');

IF OBJECT_ID(N'[migration].[app_base]', N'U') IS NULL
CREATE TABLE [migration].[app_base] (
  [app_id] int IDENTITY(1,1) NOT NULL,
  [product_line_enum] smallint NOT NULL,
  [receive_date] datetime NOT NULL DEFAULT GETUTCDATE(),
  [ip_address] varchar(39) NULL,
  [amount] decimal(12,2) NULL,
  CONSTRAINT [pk_app_base] PRIMARY KEY ([app_id])
);

IF OBJECT_ID(N'[migration].[app_contact_base]', N'U') IS NULL
CREATE TABLE [migration].[app_contact_base] (
  [con_id] int IDENTITY(1,1) NOT NULL,
  [app_id] int NOT NULL,
  [first_name] varchar(10) NOT NULL,
  [flag] bit NOT NULL DEFAULT 0,
  [birth_date] date NULL,
  CONSTRAINT [pk_app_contact_base] PRIMARY KEY ([con_id]),
  CONSTRAINT [fk_app_contact_base_app_id] FOREIGN KEY ([app_id]) REFERENCES [migration].[app_base] ([app_id]) ON DELETE CASCADE
);

IF OBJECT_ID(N'[migration].[app_contact_address]', N'U') IS NULL
CREATE TABLE [migration].[app_contact_address] (
  [con_id] int NOT NULL,
  [address_type_enum] smallint NOT NULL,
  [city] varchar(20) NULL,
  CONSTRAINT [pk_app_contact_address] PRIMARY KEY ([con_id], [address_type_enum]),
  CONSTRAINT [fk_app_contact_address_con_id] FOREIGN KEY ([con_id]) REFERENCES [migration].[app_contact_base] ([con_id]) ON DELETE CASCADE
);

IF OBJECT_ID(N'[migration].[processing_log]', N'U') IS NULL
CREATE TABLE [migration].[processing_log] (
  [log_id] int IDENTITY(1,1) NOT NULL,
  [app_id] int NOT NULL,
  [status] varchar(20) NOT NULL,
  [stage] varchar(20) NULL,
  [failure_reason] varchar(500) NULL,
  [processing_time] datetime2(7) NOT NULL DEFAULT GETUTCDATE(),
  [session_id] varchar(50) NULL,
  [app_id_start] int NULL,
  [app_id_end] int NULL,
  [content_hash] varchar(64) NULL,
  CONSTRAINT [pk_processing_log] PRIMARY KEY ([log_id])
);

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ux_processing_log_app_id' AND object_id = OBJECT_ID(N'[migration].[processing_log]'))
CREATE UNIQUE INDEX [ux_processing_log_app_id] ON [migration].[processing_log] ([app_id]);

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_processing_log_content_hash' AND object_id = OBJECT_ID(N'[migration].[processing_log]'))
CREATE INDEX [ix_processing_log_content_hash] ON [migration].[processing_log] ([content_hash]);

IF OBJECT_ID(N'[migration].[dead_letter]', N'U') IS NULL
CREATE TABLE [migration].[dead_letter] (
  [id] bigint IDENTITY(1,1) NOT NULL,
  [source] varchar(1000) NOT NULL,
  [app_id] int NULL,
  [stage] varchar(20) NOT NULL,
  [reason] varchar(2000) NOT NULL,
  [payload] nvarchar(max) NULL,
  [created_at] datetime2(7) NOT NULL DEFAULT GETUTCDATE(),
  [doc_key] varchar(40) NULL,
  [session_id] varchar(50) NULL,
  [attempts] int NOT NULL DEFAULT 1,
  [last_seen_at] datetime2(7) NULL,
  CONSTRAINT [pk_dead_letter] PRIMARY KEY ([id])
);

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ux_dead_letter_doc_key' AND object_id = OBJECT_ID(N'[migration].[dead_letter]'))
CREATE UNIQUE INDEX [ux_dead_letter_doc_key] ON [migration].[dead_letter] ([doc_key]);

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_dead_letter_app_id' AND object_id = OBJECT_ID(N'[migration].[dead_letter]'))
CREATE INDEX [ix_dead_letter_app_id] ON [migration].[dead_letter] ([app_id]);
