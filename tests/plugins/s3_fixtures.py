"""A real S3 API for the tests: moto's server on 127.0.0.1 (one per session), reached through s3fs.

``s3_root`` points a test at a fresh prefix of the session's bucket and sets what a user sets on
a cluster (``AWS_ENDPOINT_URL`` and credentials in the environment: botocore and s3fs read them),
so ``ArtifactStore(home, root="s3://…")`` talks to the server over HTTP, as it would to S3."""
from __future__ import annotations

import socket
import uuid

import pytest

BUCKET = "trex-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture
def s3_root(s3_server, monkeypatch):
    """``s3://trex-test/<fresh prefix>``, with the environment set to reach the session's server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()  # s3fs caches clients (and so endpoints) per options
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"
