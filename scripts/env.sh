# Offline-friendly settings shared by the run and test scripts (source this file).
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export DVC_NO_ANALYTICS=1
export NO_ALBUMENTATIONS_UPDATE=1
export PREFECT_LOGGING_LEVEL=${PREFECT_LOGGING_LEVEL:-WARNING}
