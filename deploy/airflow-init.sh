#!/usr/bin/env bash
# One-shot init of the Airflow metadata database: the other Airflow services
# start only after this exits 0 (depends_on: service_completed_successfully).
# Safe to run again: `db migrate` is idempotent and an existing admin is kept.
set -euo pipefail

: "${AIRFLOW_ADMIN_USERNAME:?AIRFLOW_ADMIN_USERNAME is not set: add it to the env file}"
: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD is not set: add it to the env file}"

echo "Migrating the Airflow metadata database (also creates the FAB user tables)"
airflow db migrate

# The team roles the use-case configs name (`access`), before the DAG processor starts: it
# refuses a DAG whose access_control names a role that does not exist. Existing roles are kept.
echo "Creating the team roles the use-case configs name"
python -m mlops.orchestration.team_roles

# `users create` leaves an existing user untouched (it prints "already exists"
# and exits 0), so the password in the env file only applies to the first init;
# change it later with `airflow users reset-password`.
echo "Creating the admin user ${AIRFLOW_ADMIN_USERNAME} if it does not exist"
airflow users create \
    --username "$AIRFLOW_ADMIN_USERNAME" \
    --password "$AIRFLOW_ADMIN_PASSWORD" \
    --email "${AIRFLOW_ADMIN_EMAIL:-admin@localhost}" \
    --firstname Admin --lastname Admin --role Admin

# The state folder is shared by the workers (snapshots, reports, labels) and the
# prediction service (the prediction log); create it with the right owner.
mkdir -p "${MLOPS_HOME:?}/data" "$MLOPS_HOME/reports" "$MLOPS_HOME/labels"
echo "Airflow init done"
