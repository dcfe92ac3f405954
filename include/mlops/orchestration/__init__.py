"""The only part of the package that imports Airflow: Assets, task profiles, DAG builders."""
