#!/usr/bin/env bash
# Installs (if missing) and starts a PostgreSQL server on 127.0.0.1:5432 with the psqlODBC driver, creates the
# test role and database, and prints the ODBC target the tests read from XMLSQL_TEST_PG. Needs root (apt-get).
set -euo pipefail
need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
odbcinst -q -d 2>/dev/null | grep -q 'PostgreSQL Unicode' || need+=(odbc-postgresql unixodbc)
command -v odbcinst >/dev/null 2>&1 || need+=(unixodbc)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== apt-get install ${need[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql odbc-postgresql unixodbc >&2
fi
ver=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
if [ -z "$ver" ]; then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_createcluster "$ver" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$ver" main start >&2
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -h 127.0.0.1 -qAtc 'select 1'" >/dev/null 2>&1 && break
  su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
PGPASS="${XMLSQL_PG_PASSWORD:-xmlsql-test-pw}"
su postgres -c "psql -qAt" >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'xmlsql') THEN
    CREATE ROLE xmlsql LOGIN SUPERUSER PASSWORD '${PGPASS}';
  ELSE
    ALTER ROLE xmlsql LOGIN SUPERUSER PASSWORD '${PGPASS}';
  END IF;
END \$\$;
SQL
su postgres -c "psql -qAtc \"select 1 from pg_database where datname='xmlsql_test'\"" | grep -q 1 \
  || su postgres -c "createdb -O xmlsql xmlsql_test" >&2
echo "odbc:Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=xmlsql_test;Uid=xmlsql;Pwd=${PGPASS}"
