CREATE TABLE IF NOT EXISTS "app_base" (
  "app_id" INTEGER PRIMARY KEY,
  "product_line_enum" smallint NOT NULL,
  "receive_date" datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "ip_address" varchar(39) NULL,
  "amount" decimal(12,2) NULL,
  CONSTRAINT "ck_app_base_product_line_enum" CHECK ("product_line_enum" BETWEEN -32768 AND 32767),
  CONSTRAINT "ck_app_base_ip_address" CHECK (length("ip_address") <= 39),
  CONSTRAINT "ck_app_base_amount" CHECK (abs("amount") < 1e10)
);

CREATE TABLE IF NOT EXISTS "app_contact_base" (
  "con_id" INTEGER PRIMARY KEY,
  "app_id" int NOT NULL,
  "first_name" varchar(10) NOT NULL,
  "flag" bit NOT NULL DEFAULT 0,
  "birth_date" date NULL,
  CONSTRAINT "ck_app_contact_base_first_name" CHECK (length("first_name") <= 10),
  CONSTRAINT "ck_app_contact_base_flag" CHECK ("flag" IN (0, 1)),
  CONSTRAINT "fk_app_contact_base_app_id" FOREIGN KEY ("app_id") REFERENCES "app_base" ("app_id") ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS "app_contact_address" (
  "con_id" int NOT NULL,
  "address_type_enum" smallint NOT NULL,
  "city" varchar(20) NULL,
  CONSTRAINT "ck_app_contact_address_address_type_enum" CHECK ("address_type_enum" BETWEEN -32768 AND 32767),
  CONSTRAINT "ck_app_contact_address_city" CHECK (length("city") <= 20),
  CONSTRAINT "pk_app_contact_address" PRIMARY KEY ("con_id", "address_type_enum"),
  CONSTRAINT "fk_app_contact_address_con_id" FOREIGN KEY ("con_id") REFERENCES "app_contact_base" ("con_id") ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS "processing_log" (
  "log_id" INTEGER PRIMARY KEY,
  "app_id" int NOT NULL,
  "status" varchar(20) NOT NULL,
  "stage" varchar(20) NULL,
  "failure_reason" varchar(500) NULL,
  "processing_time" datetime2(7) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "session_id" varchar(50) NULL,
  "app_id_start" int NULL,
  "app_id_end" int NULL,
  "content_hash" varchar(64) NULL,
  CONSTRAINT "ck_processing_log_status" CHECK (length("status") <= 20),
  CONSTRAINT "ck_processing_log_stage" CHECK (length("stage") <= 20),
  CONSTRAINT "ck_processing_log_failure_reason" CHECK (length("failure_reason") <= 500),
  CONSTRAINT "ck_processing_log_session_id" CHECK (length("session_id") <= 50),
  CONSTRAINT "ck_processing_log_content_hash" CHECK (length("content_hash") <= 64)
);

CREATE UNIQUE INDEX IF NOT EXISTS "ux_processing_log_app_id" ON "processing_log" ("app_id");

CREATE INDEX IF NOT EXISTS "ix_processing_log_content_hash" ON "processing_log" ("content_hash");

CREATE TABLE IF NOT EXISTS "dead_letter" (
  "id" INTEGER PRIMARY KEY,
  "source" varchar(1000) NOT NULL,
  "app_id" int NULL,
  "stage" varchar(20) NOT NULL,
  "reason" varchar(2000) NOT NULL,
  "payload" text NULL,
  "created_at" datetime2(7) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "doc_key" varchar(40) NULL,
  "session_id" varchar(50) NULL,
  "attempts" int NOT NULL DEFAULT 1,
  "last_seen_at" datetime2(7) NULL,
  CONSTRAINT "ck_dead_letter_source" CHECK (length("source") <= 1000),
  CONSTRAINT "ck_dead_letter_stage" CHECK (length("stage") <= 20),
  CONSTRAINT "ck_dead_letter_reason" CHECK (length("reason") <= 2000),
  CONSTRAINT "ck_dead_letter_doc_key" CHECK (length("doc_key") <= 40),
  CONSTRAINT "ck_dead_letter_session_id" CHECK (length("session_id") <= 50)
);

CREATE UNIQUE INDEX IF NOT EXISTS "ux_dead_letter_doc_key" ON "dead_letter" ("doc_key");

CREATE INDEX IF NOT EXISTS "ix_dead_letter_app_id" ON "dead_letter" ("app_id");
