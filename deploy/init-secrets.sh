#!/bin/sh
# Creates deploy/secrets/ with random passwords and the connection URLs built from them (mode 0600), once.
# The TLS certificate and key for LEDGER_DOMAIN are yours to provide: copy them to
# deploy/secrets/tls_certificate.pem and deploy/secrets/tls_key.pem.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
write() { [ -s "secrets/$1" ] || printf '%s' "$2" > "secrets/$1"; }
write postgres_password "$(random)"
write replication_password "$(random)"
write metrics_token "$(random)"
write grafana_admin_password "$(random)"
password=$(cat secrets/postgres_password)
write ledger_database_url "postgresql+asyncpg://ledger:${password}@db:5432/ledger"
write ledger_database_read_url "postgresql+asyncpg://ledger:${password}@db-replica:5432/ledger"
for pem in tls_certificate.pem tls_key.pem; do
    [ -s "secrets/$pem" ] || echo "deploy/secrets/$pem is missing: provide the certificate and key for LEDGER_DOMAIN" >&2
done
echo "secrets in $(pwd)/secrets"
