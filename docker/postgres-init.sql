-- A second database in the same PostgreSQL for the shared Optuna studies.
CREATE DATABASE optuna OWNER gauntlet;
