"""OpenHIM mediator between health facilities and openIMIS (FHIR R4)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("openimis-openhim-mediator")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
