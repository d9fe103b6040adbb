"""The multi-node test cluster's own start-up: a head node that cannot come up (here: its GCS
port is taken, as a GCS that misses ``ray start``'s deadline on a loaded machine also fails)
is killed and started afresh on a new port, and nothing of the failed try is left running."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

from tests.workers.cluster import LocalCluster


def test_a_head_that_does_not_start_is_retried_on_a_new_port():
    root = Path(tempfile.mkdtemp(prefix="autopeft-retry-"))  # short: Ray's socket paths
    cluster = LocalCluster(root)
    taken = cluster.port
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", taken))
    blocker.listen()
    try:
        cluster.start_node("head", num_cpus=1, head=True, attempts=3)
        assert cluster.port != taken and cluster.address == f"127.0.0.1:{cluster.port}"
        assert "Ray runtime started" in cluster.log("head")
        gcs = cluster.pids("head", "gcs_server")
        assert len(gcs) == 1, gcs  # the failed try's GCS is gone, the new one listens
        with socket.create_connection(("127.0.0.1", cluster.port), timeout=5):
            pass
    finally:
        cluster.stop()
        blocker.close()
        leftover = cluster.pids()
        shutil.rmtree(root, ignore_errors=True)
    assert leftover == []
