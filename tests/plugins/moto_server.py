"""pytest fixtures: a real moto S3 server on loopback, and a fresh bucket per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

__all__ = ["MotoServer", "S3Bucket", "moto_server", "s3_bucket"]

_bucket_numbers = itertools.count(1)


@dataclass(frozen=True)
class MotoServer:
    """Where the moto server listens, and the dummy keys it accepts."""

    endpoint_url: str
    region: str = "us-east-1"
    access_key: str = "mpsflow-test-access-key"
    secret_key: str = "mpsflow-test-secret-key"

    def client(self) -> Any:
        """A synchronous boto3 S3 client for checking what the code under test wrote."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )


@dataclass(frozen=True)
class S3Bucket:
    """A bucket that exists on the moto server for the duration of one test."""

    name: str
    server: MotoServer
    client: Any

    def object_keys(self) -> list[str]:
        """Every object key in the bucket, sorted."""
        listing = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        """The bytes of one object."""
        body: bytes = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return body


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """Start ``moto.server.ThreadedMotoServer`` on 127.0.0.1 (a free port) for the session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoServer(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> Iterator[S3Bucket]:
    """A new, empty bucket; emptied and deleted after the test."""
    client = moto_server.client()
    name = f"mpsflow-test-{next(_bucket_numbers)}"
    client.create_bucket(Bucket=name)
    try:
        yield S3Bucket(name=name, server=moto_server, client=client)
    finally:
        for key in S3Bucket(name=name, server=moto_server, client=client).object_keys():
            client.delete_object(Bucket=name, Key=key)
        client.delete_bucket(Bucket=name)
