"""A real S3 API server for the tests: moto's server mode on 127.0.0.1 (``pip install "moto[server]"``).

Started once per session on a free port by the ``s3_server`` fixture (tests/conftest.py) and
terminated at teardown. Nothing in the tests talks to any other address: the endpoint is given
explicitly (storage option ``endpoint_url`` or ``AWS_ENDPOINT_URL``), credentials are fixed test
values, and ``AWS_EC2_METADATA_DISABLED`` keeps botocore off the instance-metadata address.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

KEY, SECRET, REGION = "featcomp-test-key", "featcomp-test-secret", "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    """A running moto server: its endpoint, the credentials it takes, and the env that points at it."""

    endpoint: str
    proc: subprocess.Popen
    log: Path
    buckets: list[str] = field(default_factory=list)

    @property
    def storage_options(self) -> dict:
        """The storage options of this server (what a user passes with --storage-option)."""
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET,
                "client_kwargs": {"region_name": REGION}}

    @property
    def env(self) -> dict[str, str]:
        """Environment credentials for this server (what a user exports instead)."""
        return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}

    def cli_options(self) -> list[str]:
        return ["--storage-option", f"endpoint_url={self.endpoint}", "--storage-option", f"key={KEY}",
                "--storage-option", f"secret={SECRET}", "--storage-option", f"client_kwargs.region_name={REGION}"]

    def make_bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                     region_name=REGION).create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def requests(self) -> int:
        """Requests the server has answered so far (its access log lines)."""
        return sum(1 for ln in self.log.read_text(errors="replace").splitlines() if '" ' in ln and "HTTP/1." in ln)


def moto_server_command() -> str:
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not os.path.exists(exe):
        raise RuntimeError('moto_server not found: pip install "moto[server]" s3fs (the test extra)')
    return exe


def start_server(log: Path, timeout: float = 120.0, *, authenticate: bool = False) -> S3Server:
    """Start ``moto_server -H 127.0.0.1 -p PORT`` and wait (bounded) until it answers.

    ``authenticate``: the server checks credentials against its own IAM from the first request on
    (moto's ``INITIAL_NO_AUTH_ACTION_COUNT=0``), so unknown keys are refused with 403.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    fh = open(log, "wb")
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    if authenticate:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    proc = subprocess.Popen([moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=fh, stderr=subprocess.STDOUT, env=env)
    t0 = time.monotonic()
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, never a proxy
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with direct.open(endpoint + "/moto-api/", timeout=2):
                break
        except OSError:
            if time.monotonic() - t0 > timeout:
                proc.kill()
                raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout} s") from None
            time.sleep(0.2)
    return S3Server(endpoint=endpoint, proc=proc, log=log)


def stop_server(server: S3Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(10)
