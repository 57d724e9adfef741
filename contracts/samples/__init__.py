"""The sample contract (credit_app.json), its table spec (credit_app_tables.json) and a generator of documents
that fit them (generate.py)."""
