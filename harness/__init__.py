"""prefect-conformance: drive real Prefect clients against a Prefect-compatible server and report what differs."""

__version__ = "0.1.0"

#: The Prefect release whose server is the reference and whose clients are the actors.
PREFECT_REFERENCE_VERSION = "3.9.1"
