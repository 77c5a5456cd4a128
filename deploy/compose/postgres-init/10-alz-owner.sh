#!/bin/sh
# Runs once, as the `postgres` user, when the database volume is new (the postgres image's
# /docker-entrypoint-initdb.d): creates the application's owner role `alz` with the generated
# password, NOT a superuser, and makes it the owner of the database (so of its schema public,
# owned by pg_database_owner since PostgreSQL 15). CREATEROLE lets `alz ui` create and update
# the read-only role; on PostgreSQL 16 (the image used) it reaches only the roles `alz` itself
# created. The password is read by psql from the file (\set with backquotes): it is never on a
# command line, and the statement is not logged (log_statement is none in the image).
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v db="$POSTGRES_DB" <<'SQL'
\set owner_password `cat /run/secrets/db/owner_password`
CREATE ROLE alz LOGIN NOSUPERUSER NOCREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
\unset owner_password
ALTER DATABASE :"db" OWNER TO alz;
SQL
