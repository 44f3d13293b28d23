-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d): the MLflow tracking
-- server's own database beside the workbench's, owned by the same account.
CREATE DATABASE mlflow OWNER workbench;
