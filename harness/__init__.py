"""prunebench harness: shared machinery (loading, calibration, the block loop, evaluation, records).

Importing this package has no side effects; the entry points (`harness.run`, tests, benchmarks)
call :func:`harness.env.configure_runtime` explicitly.
"""

__version__ = "0.1.0"
