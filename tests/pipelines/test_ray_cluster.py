"""The job and a cluster started with ``ray start`` on the same machine (issue 14).

Each test starts its own head with ``ray start --head --block`` under a private ``RAY_TMPDIR`` (so that
the recorded-cluster file and sockets are the test's alone, not those of other Ray users of this
machine), and stops exactly the processes it started (by pid), with timeouts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Head:
    """``ray start --head --block`` in a private RAY_TMPDIR; ``stop()`` ends its process tree by pid."""

    def __init__(self, env_extra: dict[str, str] | None = None) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: AF_UNIX socket paths
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        self.env.update(RAY_TMPDIR=self.tmp, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT), **(env_extra or {}))
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [RAY, "start", "--head", f"--port={self.port}", "--num-cpus=1", "--include-dashboard=false", "--block",
             f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.address_file = Path(self.tmp) / "ray" / "ray_current_cluster"
        t0 = time.monotonic()
        while not self.address_file.exists():
            if self.proc.poll() is not None or time.monotonic() - t0 > 90:
                out = self.proc.stdout.read() if self.proc.poll() is not None else ""
                self.stop()
                raise AssertionError(f"ray start did not come up:\n{out}")
            time.sleep(0.2)
        self.address = self.address_file.read_text().strip()

    def run(self, code: str, env_extra: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**self.env, **(env_extra or {})},
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        import psutil

        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # ray start --block stops the node's processes
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:  # only what this head started, by pid
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def head():
    h = _Head()
    yield h
    h.stop()


@pytest.mark.timeout(240)
def test_no_address_starts_a_local_ray_of_its_own_beside_a_ray_start_cluster(head):
    """Was: "ray: starting locally" then "When connecting to an existing cluster, num_cpus and num_gpus
    must not be provided" (ray.init() joined the recorded cluster)."""
    r = head.run("""
        import ray
        from featcomp.pipelines.config import RayConfig
        from featcomp.pipelines.extract import init_ray
        assert init_ray(RayConfig(num_cpus=2, object_store_memory_mb=128)) is True
        print("GCS", ray.get_runtime_context().gcs_address)
        print("CPU", ray.cluster_resources().get("CPU"))
        ray.shutdown()
    """)
    assert r.returncode == 0, r.stdout + r.stderr
    gcs = next(ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("GCS"))
    assert gcs != head.address and not gcs.endswith(f":{head.port}")  # its own, not the recorded one
    assert "CPU 2.0" in r.stdout  # the job's own num_cpus (the head has 1)


@pytest.mark.timeout(300)
def test_a_token_cluster_needs_the_token_on_every_node_and_on_the_driver():
    """Ray 2.60 token authentication (docs/scaling.md): a head started with RAY_AUTH_MODE=token refuses
    a driver without the token; a second node and the driver that carry it join."""
    import secrets

    token = secrets.token_hex(16)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    h = _Head(auth)
    node = None
    try:
        probe = f"""
            import ray
            ray.init(address="{h.address}", logging_level="ERROR")
            import time
            t0 = time.monotonic()
            while len([n for n in ray.nodes() if n["Alive"]]) < {{want}} and time.monotonic() - t0 < 60:
                time.sleep(0.5)
            print("NODES", len([n for n in ray.nodes() if n["Alive"]]))
            ray.shutdown()
        """
        try:
            r = h.run(probe.format(want=1), {"RAY_AUTH_MODE": "disabled"}, timeout=60)
            refused = r.returncode != 0 and "NODES" not in r.stdout
            detail = r.stdout + r.stderr
        except subprocess.TimeoutExpired:
            refused, detail = True, "timed out"
        assert refused and "token" in detail, detail  # ConnectionError; its cause names token authentication
        node = subprocess.Popen(
            [RAY, "start", f"--address={h.address}", "--num-cpus=1", "--block",
             f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}"],
            env={**h.env, **auth}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        r = h.run(probe.format(want=2), auth, timeout=120)
        assert r.returncode == 0 and "NODES 2" in r.stdout, r.stdout + r.stderr
    finally:
        if node is not None:
            import psutil

            kids = []
            try:
                kids = [psutil.Process(node.pid), *psutil.Process(node.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
            _, alive = psutil.wait_procs(kids, timeout=30)
            for p in alive:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        h.stop()


@pytest.mark.timeout(240)
def test_processes_of_a_killed_drivers_local_ray_go_away_within_seconds():
    """kill -9 of a driver that started its own local Ray: its GCS and raylet died with it, but Ray's
    dashboard and runtime-env agents lingered for about 61 s (they report the raylet's death to the dead
    GCS with a fixed 60 s timeout); the job's reaper ends them."""
    import psutil

    tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=tmp, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    code = textwrap.dedent("""
        import time
        import ray
        from featcomp.pipelines.config import RayConfig
        from featcomp.pipelines.extract import init_ray
        init_ray(RayConfig(num_cpus=2, object_store_memory_mb=128))

        @ray.remote
        def busy():
            time.sleep(600)

        refs = [busy.remote() for _ in range(2)]
        time.sleep(4)
        print("READY", flush=True)
        time.sleep(600)
    """)
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    procs: list = []
    try:
        assert driver.stdout.readline().strip() == "READY"
        procs = psutil.Process(driver.pid).children(recursive=True)
        names = {p.pid: p.name() for p in procs}
        assert any("raylet" in n for n in names.values()) and any("Agent" in n for n in names.values()), names
        t0 = time.monotonic()
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        gone, alive = psutil.wait_procs(procs, timeout=10)
        took = time.monotonic() - t0
        assert not alive, f"still running {took:.0f} s after the kill: {[(p.pid, names.get(p.pid)) for p in alive]}"
        assert took < 10  # measured: 2.6 s (61.7 s before the reaper)
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in procs:  # only this test's processes, by pid
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
