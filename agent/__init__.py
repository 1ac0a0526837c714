"""The rtbench agent: runs on every node, watches its pods, probes them and streams
timestamped events to the collector.
"""

import os

# gRPC's core logs its own copy of a failed TLS handshake on stderr, once per internal
# reconnect attempt, next to the uplink's one clear line (the agent's log would fill
# with them while an operator fixes a CA file). gRPC reads this variable when it is
# first imported, and this package's modules import it, so it is set here, first.
# An operator debugging gRPC itself can still set GRPC_VERBOSITY.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
