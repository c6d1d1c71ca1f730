#!/bin/sh
# The streaming replica: on first start, copy the primary with pg_basebackup -R (which writes the standby
# settings), then run PostgreSQL as a hot standby that serves the ledger's reads.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    PGPASSWORD=$(cat "$REPLICATION_PASSWORD_FILE")
    export PGPASSWORD
    until pg_basebackup -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" -R -X stream --checkpoint=fast; do
        echo "waiting for the primary at $PRIMARY_HOST" >&2
        rm -rf "${PGDATA:?}"/*
        sleep 2
    done
    chmod 700 "$PGDATA"
fi
exec postgres
