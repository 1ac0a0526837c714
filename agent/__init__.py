"""The rtbench agent: runs on every node, watches its pods, probes them and streams
timestamped events to the collector.
"""
