"""Helpers shared by the S3 tests and their fixtures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sanyi.config import Settings


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client straight to ``endpoint`` with the test credentials."""
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@dataclass
class S3Env:
    """One test's S3 profile: Sanyi's settings and a client for setting up and checking the store."""

    settings: Settings
    client: Any  # boto3 S3 client straight to the store (never through the fault proxy)
    endpoint: str
