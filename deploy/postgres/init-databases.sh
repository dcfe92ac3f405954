#!/usr/bin/env bash
# Sourced by the postgres image's entrypoint from /docker-entrypoint-initdb.d on
# the first start with an empty data volume (never again afterwards: changing
# the passwords in the env file later does not change them in the database;
# see docs/deployment.md, "Rotating secrets").
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set: add it to the env file}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set: add it to the env file}"
: "${FEATURES_DB_PASSWORD:?FEATURES_DB_PASSWORD is not set: add it to the env file}"

# psql variables (not shell interpolation into SQL) so that the names and
# passwords are quoted by psql itself.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v airflow_db_user="${AIRFLOW_DB_USER:-airflow}" \
    -v airflow_db_name="${AIRFLOW_DB_NAME:-airflow}" \
    -v airflow_db_password="$AIRFLOW_DB_PASSWORD" \
    -v mlflow_db_user="${MLFLOW_DB_USER:-mlflow}" \
    -v mlflow_db_name="${MLFLOW_DB_NAME:-mlflow}" \
    -v mlflow_db_password="$MLFLOW_DB_PASSWORD" \
    -v mlflow_auth_db_name="${MLFLOW_AUTH_DB_NAME:-mlflow_auth}" \
    -v features_db_user="${FEATURES_DB_USER:-features}" \
    -v features_db_name="${FEATURES_DB_NAME:-features}" \
    -v features_db_password="$FEATURES_DB_PASSWORD" \
    -f /opt/mlops-postgres/init-databases.sql
