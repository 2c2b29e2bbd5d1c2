#!/bin/bash
# Sanyi keeps its own state (ledger, Iceberg catalog) in its own database, apart from Airflow's.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE USER sanyi WITH PASSWORD '${SANYI_DB_PASSWORD}';
CREATE DATABASE sanyi OWNER sanyi;
SQL
