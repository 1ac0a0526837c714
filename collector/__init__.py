"""The rtbench collector: journals agent batches, exports them to InfluxDB and keeps
the registry of runs and their summaries.
"""
