"""Shared pytest fixtures and settings for featcomp's tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API server (moto) on 127.0.0.1 and a free port for the whole session; stopped at teardown."""
    from tests.s3 import start_server, stop_server

    server = start_server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    stop_server(server)


@pytest.fixture()
def s3_bucket(s3_server, monkeypatch, request):
    """A fresh bucket on the test server; the server's credentials and endpoint are in the environment
    (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) for this test only."""
    import re

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{len(s3_server.buckets)}"
    return s3_server.make_bucket(name)
