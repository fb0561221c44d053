"""Prefect flows: thin front doors onto the library (see score_corpus.py and train_model.py
beside this file).

Importing this package imports nothing from Prefect; each flow module does, when it is loaded.

The library logs through the `allsides_batch` loggers (training progress, notes, warnings); a flow run's
logs include those records: PREFECT_LOGGING_EXTRA_LOGGERS names the package unless the environment
sets it already, and where Prefect was imported first (a worker's flow run loads this package after
Prefect read its settings) the package logger gets Prefect's run-log handlers here, as Prefect's
logging setup gives them to the loggers that setting names."""

from __future__ import annotations

import logging
import os
import sys

PACKAGE_LOGGER = "allsides_batch"
EXTRA_LOGGERS_ENV = "PREFECT_LOGGING_EXTRA_LOGGERS"


def capture_package_logs() -> None:
    """Send the package's records (info and above) to the flow run's logs; idempotent."""
    os.environ.setdefault(EXTRA_LOGGERS_ENV, PACKAGE_LOGGER)
    # the package also logs outside flow runs (the CLI before and after a night): not an API matter
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    if PACKAGE_LOGGER not in [name.strip() for name in os.environ[EXTRA_LOGGERS_ENV].split(",")]:
        return
    package = logging.getLogger(PACKAGE_LOGGER)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)  # the root logger's WARNING would drop the progress lines
    if "prefect" in sys.modules:  # Prefect read its settings before the line above could name the package
        import prefect.main  # noqa: F401  (runs Prefect's logging setup if that has not happened yet)

        for handler in logging.getLogger("prefect.extra").handlers:
            if handler not in package.handlers:
                package.addHandler(handler)


capture_package_logs()
