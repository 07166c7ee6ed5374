# The gauntlet image for the Prefect server and the workers (docker-compose.yml).
# No secrets in here: COMET_API_KEY and the database password come from the environment at run time.
FROM python:3.11-slim
WORKDIR /app
# libgomp1: the OpenMP runtime LightGBM's wheel links against (not in the slim image).
RUN apt-get update && apt-get install -y --no-install-recommends make libgomp1 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md Makefile prefect.yaml ./
COPY config ./config
COPY gauntlet ./gauntlet
COPY flows ./flows
COPY tasks ./tasks
RUN pip install --no-cache-dir -e ".[postgres]" \
    && python -c "import lightgbm, xgboost, sklearn, psycopg, gauntlet.cli, flows.train, flows.evaluate"
ENV PREFECT_HOME=/app/.prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    COMET_ERROR_TRACKING_ENABLE=false
