"""The benchmark workloads behind `python -m rustasync bench`.

They ship inside the package so that the command works from an installed
wheel; the repository's ``benchmarks/`` scripts run the same modules.
"""
