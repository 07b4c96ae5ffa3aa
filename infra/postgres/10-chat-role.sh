#!/bin/sh
# Run once by the postgres image, when its data directory is created: the role the services connect as
# and the database it owns. Least privilege: no superuser, no CREATEDB, no CREATEROLE; as the database's
# owner it can run its own migrations (tables, indexes, functions in the public schema) and nothing more.
set -eu
: "${CHAT_DB_PASSWORD:?set CHAT_DB_PASSWORD: the chat_app role's password (used in DATABASE_URL)}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres --set=password="$CHAT_DB_PASSWORD" <<'SQL'
CREATE ROLE chat_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
CREATE DATABASE chat OWNER chat_app;
REVOKE ALL ON DATABASE chat FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE chat TO chat_app;
SQL
