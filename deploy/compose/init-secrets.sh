#!/bin/sh
# The `secrets` service of docker-compose.yml: runs before the database on every
# `docker compose up` and generates the passwords once (kept in named volumes, never in the
# repository or in an environment variable):
#
#   /secrets/db/superuser_password  PostgreSQL's superuser `postgres` (POSTGRES_PASSWORD_FILE);
#                                   used by nobody after the first start
#   /secrets/db/owner_password      the application's owner role `alz` (not a superuser), read
#                                   by postgres-init/10-alz-owner.sh when the volume is new
#   /secrets/app/pgpass             the same password as a libpq password file (PGPASSFILE)
#                                   for the migrate, worker and webapp containers
#
# Each file is readable only by the user that needs it: 999 is `postgres` in the postgres:16
# image, 10001 the `alz` user of the project's Dockerfile. libpq ignores a password file that
# its group or others may read, hence 0600.
set -eu
umask 077
new_password() {
    # 32 random bytes as 64 hex characters: nothing to escape in a URL or a pgpass line
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}
db=/secrets/db
app=/secrets/app
for name in superuser_password owner_password; do
    [ -s "$db/$name" ] || new_password > "$db/$name"
done
printf '*:*:*:alz:%s\n' "$(cat "$db/owner_password")" > "$app/pgpass.new"
mv "$app/pgpass.new" "$app/pgpass"
chown 999:999 "$db/superuser_password" "$db/owner_password"
chmod 0400 "$db/superuser_password" "$db/owner_password"
chown 10001:10001 "$app/pgpass"
chmod 0600 "$app/pgpass"
chmod 0755 "$db" "$app"
echo "secrets ready"
