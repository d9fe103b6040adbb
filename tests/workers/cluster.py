"""A real multi-node Ray cluster on this machine, started with ``ray start`` (test helper).

Every node listens on 127.0.0.1 only. Ray 2.60 rewrites ``--node-ip-address=127.0.0.1`` (and a
127.0.0.1 ``--address``) to the host's routable address unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and with that variable it refuses to start worker
nodes; so ``ray start`` runs through a two-line shim that keeps loopback addresses as given
(``ray._private.services.resolve_ip_for_localhost``). Drivers joining the cluster set the
variable (the RayExecutor does that for loopback addresses).

Each node has its own ``--temp-dir``, ports chosen free by the OS, token authentication
with a token of its own (``RAY_AUTH_TOKEN``, nothing written to ``~/.ray``), and an
``AUTOPEFT_TEST_NODE`` variable that its workers inherit, so workloads can say where they ran.
``stop`` kills every process it started (process groups, then anything left that names one
of its temp dirs); it never runs ``ray stop``, which would stop other people's clusters.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SHIM = (
    "import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)


def free_ports(n: int, taken: set[int]) -> list[int]:
    """``n`` distinct free ports, none in ``taken`` (which grows by them). The sockets stay bound
    until all are chosen: ports picked one by one can repeat, and two of a node's servers on one
    port (say the metrics exporter on the runtime-env agent's) break the node in ways that only
    show later ("runtime env failed to be created": the raylet's POST reached the exporter)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in taken:
                s.close()
                continue
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    taken.update(ports)
    return ports


class LocalCluster:
    def __init__(
        self, root: Path, env: dict[str, str] | None = None, object_store_bytes: int = 80 * 2**20
    ):
        self.root = Path(root)
        self.token = secrets.token_hex(16)
        self.taken: set[int] = set()  # every port handed to one of this cluster's nodes
        (self.port,) = free_ports(1, self.taken)
        self.address = f"127.0.0.1:{self.port}"
        self.object_store_bytes = object_store_bytes
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.env.update(self.driver_env())

    def driver_env(self) -> dict[str, str]:
        """What a process that joins the cluster needs in its environment."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }

    def start_node(
        self,
        name: str,
        num_cpus: int,
        resources: str | None = None,
        head: bool = False,
        timeout: float = 120,
        attempts: int = 3,
    ) -> None:
        """Start a node and wait for ``ray start`` to say it runs. On a loaded machine the GCS
        can miss ``ray start``'s 30 s deadline ("The current node timed out during startup");
        the half-started node is then killed and started afresh on new ports, ``attempts``
        times in all, and every attempt's log is in the error if none starts."""
        logs = []
        for attempt in range(1, attempts + 1):
            if self._start_once(name, num_cpus, resources, head, timeout):
                return
            logs.append(f"--- attempt {attempt} ---\n{self.log(name)[-3000:]}")
            self._kill_node(name)
            if head:
                (self.port,) = free_ports(1, self.taken)
                self.address = f"127.0.0.1:{self.port}"
        raise RuntimeError(f"ray node {name} did not start:\n" + "\n".join(logs))

    def _kill_node(self, name: str) -> None:
        """SIGKILL one node: its ``ray start`` process group, then anything naming its temp dir."""
        _kill_group(self.procs.pop(name))
        _kill(self.pids(name))

    def _start_once(
        self, name: str, num_cpus: int, resources: str | None, head: bool, timeout: float
    ) -> bool:
        temp = self.root / name
        temp.mkdir(parents=True, exist_ok=True)
        node, objects, agent, agent_grpc, metrics, runtime_env, client = free_ports(7, self.taken)
        cmd = [
            sys.executable,
            "-c",
            SHIM,
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--temp-dir={temp}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--node-manager-port={node}",
            f"--object-manager-port={objects}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
        ]
        if head:
            cmd += [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={client}",
            ]
        else:
            cmd += [f"--address={self.address}"]
        if resources:
            cmd.append(f"--resources={resources}")
        env = dict(self.env)
        env.pop(
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None
        )  # `ray start` refuses worker nodes with it
        env["AUTOPEFT_TEST_NODE"] = name
        log = open(self.root / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log(name):
                return True
            if self.procs[name].poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pids(self, name: str | None = None, binary: str = "") -> list[int]:
        """Processes whose command line names this cluster's (or one node's) temp dir."""
        needle = str(self.root / name) if name else str(self.root)
        out = []
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                cmd = (
                    (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
            if needle in cmd and binary in cmd and int(pid_dir.name) != os.getpid():
                out.append(int(pid_dir.name))
        return out

    def kill_raylet(self, name: str) -> int:
        """SIGKILL the raylet of node ``name`` (its workers die with it). Returns its pid."""
        pids = self.pids(name, "raylet/raylet")
        assert len(pids) == 1, f"expected one raylet for {name}, found {pids}"
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def close(self) -> None:
        """``stop``, remove the cluster's folder, and fail if any of its processes lived on."""
        import shutil

        self.stop()
        leftover = self.pids()
        shutil.rmtree(self.root, ignore_errors=True)
        assert not leftover, f"ray processes left behind: {leftover}"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs.values()):
            time.sleep(0.1)
        for proc in self.procs.values():
            _kill_group(proc)
        _kill(self.pids())  # workers that left the process group


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group (``ray start`` runs in a session of its own) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def gang_nodes() -> list[str]:
    """The test nodes (``AUTOPEFT_TEST_NODE``) of the live Ray Train workers on this machine."""
    return sorted(node or "" for node, _ in gang_workers())


def gang_workers() -> list[tuple[str, int]]:
    """``(test node, pid)`` of the live Ray Train workers on this machine (test node None: a
    private Ray's worker)."""
    out = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes()
            if not cmd.startswith(b"ray::RayTrainWorker"):
                continue
            env = (pid_dir / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        node = next(
            (i.split(b"=", 1)[1].decode() for i in env if i.startswith(b"AUTOPEFT_TEST_NODE=")),
            None,
        )
        out.append((node, int(pid_dir.name)))
    return out
