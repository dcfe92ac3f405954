-- Three databases (and MLflow's users and permissions beside its own), each owned by its own login role, so the Airflow components
-- cannot read or drop the MLflow registry and the other way round, and neither the feature store's.
-- Run once by deploy/postgres/init-databases.sh on an empty data volume; the
-- psql variables come from the compose env file.
CREATE ROLE :"airflow_db_user" LOGIN PASSWORD :'airflow_db_password';
CREATE DATABASE :"airflow_db_name" OWNER :"airflow_db_user";
REVOKE ALL ON DATABASE :"airflow_db_name" FROM PUBLIC;

CREATE ROLE :"mlflow_db_user" LOGIN PASSWORD :'mlflow_db_password';
CREATE DATABASE :"mlflow_db_name" OWNER :"mlflow_db_user";
REVOKE ALL ON DATABASE :"mlflow_db_name" FROM PUBLIC;

-- MLflow's basic-auth app: its users and permissions, owned by the MLflow role.
CREATE DATABASE :"mlflow_auth_db_name" OWNER :"mlflow_db_user";
REVOKE ALL ON DATABASE :"mlflow_auth_db_name" FROM PUBLIC;

-- The feature store (Feast): its SQL registry and the feature views' offline tables.
CREATE ROLE :"features_db_user" LOGIN PASSWORD :'features_db_password';
CREATE DATABASE :"features_db_name" OWNER :"features_db_user";
REVOKE ALL ON DATABASE :"features_db_name" FROM PUBLIC;
