#!/bin/sh
# Runs once, when the primary's data directory is created: a role the replica streams the WAL with, allowed to
# connect for replication with a password (scram-sha-256), from the compose network only.
set -eu
password=$(cat "$REPLICATION_PASSWORD_FILE")
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '$password'"
echo "host replication replicator samenet scram-sha-256" >> "$PGDATA/pg_hba.conf"
