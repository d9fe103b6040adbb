"""A private Ray on 127.0.0.1 in a temp dir for the Tune integration tests (started and stopped
by each module's fixture)."""

from __future__ import annotations

import contextlib
import os
import tempfile

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@contextlib.contextmanager
def private_ray(prefix: str, num_cpus: int):
    """Yields a temp dir (Ray's files under ``r/``); Ray is shut down on exit."""
    import ray

    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=num_cpus,
            _temp_dir=os.path.join(d, "r"),
            log_to_driver=False,
        )
        try:
            yield d
        finally:
            ray.shutdown()
