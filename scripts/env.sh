# Offline-friendly settings shared by the run and test scripts (source this file).
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export DVC_NO_ANALYTICS=1
export NO_ALBUMENTATIONS_UPDATE=1
export PREFECT_LOGGING_LEVEL=${PREFECT_LOGGING_LEVEL:-WARNING}
# Without PREFECT_API_URL each flow run starts a temporary Prefect server; on a 2-core machine it
# can take longer than Prefect's default (20 s) and the run then fails with a startup timeout.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-90}
