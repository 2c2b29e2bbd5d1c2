"""The one storage abstraction: buckets of objects addressed by ``/``-separated keys.

A bucket URL is either a local folder (the embedded default, under ``$SANYI_HOME/buckets``) or
``s3://bucket[/prefix]`` on any S3-compatible endpoint (boto3; ``SANYI_S3_ENDPOINT_URL`` and the
usual AWS credential variables). Code above this module never knows which one it talks to.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pyarrow.fs import AwsStandardS3RetryStrategy

from sanyi.config import Settings, s3_endpoint_from_env, s3_region_from_env
from sanyi.privacy import mask_resident_ids


class StorageError(Exception):
    """A storage operation failed for good (after retries for transient errors)."""


class UnsafeKey(StorageError):
    """A key that could escape its bucket (``..``, absolute, empty segments)."""


class ObjectNotFound(StorageError):
    """The bucket answered, and has no object under that key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime  # UTC; the arrival time of a dropped file


class Bucket(Protocol):
    url: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def stat(self, key: str) -> ObjectInfo: ...
    def exists(self, key: str) -> bool: ...
    def open(self, key: str) -> BinaryIO: ...
    def read_bytes(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes, *, last_modified: datetime | None = None) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def copy(self, source: str, key: str) -> None: ...
    def delete(self, key: str) -> None: ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`UnsafeKey`."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
        raise UnsafeKey(mask_resident_ids(f"unsafe object key {key!r}"))
    return key


class LocalBucket:
    """A folder on the local disk. ``last_modified`` is the file's mtime."""

    def __init__(self, *, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.exists():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not name.startswith(".sanyi-tmp-"):
                    st = path.stat()
                    yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError as exc:
            raise ObjectNotFound(mask_resident_ids(f"no object {key!r} in {self.url}")) from exc
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(mask_resident_ids(f"no object {key!r} in {self.url}")) from exc

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def put(self, key: str, data: bytes, *, last_modified: datetime | None = None) -> None:
        self._replace(key, lambda tmp: tmp.write_bytes(data))
        if last_modified is not None:
            ts = last_modified.timestamp()
            os.utime(self._path(key), (ts, ts))

    def put_file(self, key: str, path: Path) -> None:
        """Store the local file at ``path`` as ``key``, streamed (not read into memory)."""
        self._replace(key, lambda tmp: shutil.copyfile(path, tmp))

    def copy(self, source: str, key: str) -> None:
        """Copy object ``source`` to ``key`` in this bucket."""
        src = self._path(source)
        if not src.is_file():
            raise ObjectNotFound(mask_resident_ids(f"no object {source!r} in {self.url}"))
        self._replace(key, lambda tmp: shutil.copyfile(src, tmp))

    def _replace(self, key: str, write: Callable[[Path], object]) -> None:
        """``write`` the object to a temporary file beside it, then rename: a reader never sees half of it."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".sanyi-tmp-{os.getpid()}-{path.name}")
        write(tmp)
        os.replace(tmp, path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


# One budget for every S3 call, boto3 and pyarrow alike: both back off exponentially with jitter
# (botocore's "standard" mode; the AWS C++ SDK's StandardRetryStrategy inside pyarrow, whose waits of
# up to 1, 2, 4 and 8 s bound an outage seen through pyarrow to about 15 s before the task fails and
# the file stays pending for Airflow's task retry or the next run).
S3_MAX_ATTEMPTS = 5

# How an S3 error that escaped botocore's retries is reported: a missing object is an answer (not a
# failure), throttling and 5xx were retried until the budget ran out, anything else was refused at once.
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_THROTTLING_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"}


class ArrowS3Retry(AwsStandardS3RetryStrategy):
    """pyarrow's S3 retry strategy for the Iceberg FileIO (``s3.retry-strategy-impl``).

    pyiceberg instantiates it without arguments, so the attempt budget is :data:`S3_MAX_ATTEMPTS`.
    """

    def __init__(self, max_attempts: int = S3_MAX_ATTEMPTS) -> None:
        super().__init__(max_attempts=max_attempts)


_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()
_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def _s3_client(endpoint_url: str | None, region: str, attempts: int) -> Any:
    """A boto3 S3 client, shared within the process: building one costs about 0.3 s (model loading).

    Clients are thread-safe, sessions are not, so each client gets its own session, built under a
    lock. The key holds the pid (a client must not cross a fork: it would share pooled sockets with
    the parent) and the credential variables (a changed key gets a new client).
    """
    import boto3
    from botocore.config import Config

    key = (os.getpid(), endpoint_url, region, attempts, *(os.environ.get(v) for v in _CREDENTIAL_VARS))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(
                    retries={"total_max_attempts": attempts, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                ),
            )
            _CLIENTS[key] = client
    return client


class S3Bucket:
    """An S3 bucket (optionally a prefix in it), through boto3.

    Works with any S3-compatible endpoint. Transient failures (throttling, 5xx, refused or dropped
    connections) are retried by botocore's standard retry mode; a response body that breaks off
    mid-way is resumed with a ranged GET pinned to the object's ETag. What is still failing after
    that, and every permanent error (access denied, missing bucket, bad credentials), is raised as
    :class:`StorageError` naming the operation, the object and the S3 error code.
    """

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        attempts: int = S3_MAX_ATTEMPTS,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.region = region or "us-east-1"
        self.attempts = attempts
        self.client = _s3_client(endpoint_url, self.region, attempts)

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _where(self, key: str | None) -> str:
        return f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """Run one client operation (botocore retries transient errors) and translate what escapes."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise self._error(operation, kwargs.get("Key"), exc) from exc

    def _error(self, operation: str, key: str | None, exc: Exception) -> StorageError:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        # Keys are chosen by agencies and may hold a resident id; errors end up in logs and the ledger.
        where = mask_resident_ids(self._where(key))
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            detail = mask_resident_ids(f"{code}" + (f" ({err['Message']})" if err.get("Message") else ""))
            if code in _NOT_FOUND_CODES and operation in ("get_object", "head_object"):
                return ObjectNotFound(f"no object at {where}")
            if status >= 500 or code in _THROTTLING_CODES:
                return StorageError(
                    f"S3 {operation} on {where} still failing after {self.attempts} attempts: {detail}"
                )
            return StorageError(f"S3 {operation} on {where} refused: {detail} (HTTP {status}; not retried)")
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            # Connection refused or dropped, timeouts: botocore has already spent the retry budget.
            return StorageError(
                mask_resident_ids(f"S3 {operation} on {where} failed after {self.attempts} attempts: {exc}")
            )
        return StorageError(
            mask_resident_ids(f"S3 {operation} on {where} failed: {type(exc).__name__}: {exc}")
        )

    def ensure(self) -> None:
        """Create the bucket if it does not exist (tests and first start-up)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise self._error("head_bucket", None, exc) from exc
        kwargs: dict[str, Any] = {}
        if self.region != "us-east-1":  # S3 rejects an explicit us-east-1 location constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self._call("create_bucket", **kwargs)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(self._rel(obj["Key"]), obj["Size"], obj["LastModified"].astimezone(UTC))
        except Exception as exc:
            raise self._error("list_objects_v2", None, exc) from exc

    def stat(self, key: str) -> ObjectInfo:
        head = self._call("head_object", Key=self._full(key))
        return ObjectInfo(key, head["ContentLength"], head["LastModified"].astimezone(UTC))

    def exists(self, key: str) -> bool:
        # Only "not found" means no: a refused or unreachable endpoint must not pass for an absent object.
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def open(self, key: str) -> BinaryIO:
        return _S3Reader(self, self._full(key))  # type: ignore[return-value]

    def read_bytes(self, key: str) -> bytes:
        with _S3Reader(self, self._full(key)) as reader:
            return reader.read()

    def put(self, key: str, data: bytes, *, last_modified: datetime | None = None) -> None:
        # S3 sets LastModified itself; ``last_modified`` is honoured only by local folders.
        self._call("put_object", Key=self._full(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        """Upload the local file at ``path`` as ``key`` (boto3's managed upload: multipart when large)."""
        self._call("upload_file", Filename=str(path), Key=self._full(key))

    def copy(self, source: str, key: str) -> None:
        """Copy object ``source`` to ``key`` inside the store (boto3's managed copy): no bytes pass here."""
        self._call("copy", CopySource={"Bucket": self.bucket, "Key": self._full(source)}, Key=self._full(key))

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=self._full(key))


class _S3Reader(io.RawIOBase):
    """A GET response body that survives a broken connection.

    botocore retries a request until its response headers arrive, not while the body streams; a
    connection dropped mid-body would otherwise lose the read. The reader re-issues a ranged GET
    from the current offset, pinned by ``If-Match`` to the ETag of the first response so that the
    bytes cannot silently switch to a newer version of the object.
    """

    def __init__(self, bucket: S3Bucket, full_key: str) -> None:
        super().__init__()
        self._bucket = bucket
        self._key = full_key
        self._pos = 0
        resp = bucket._call("get_object", Key=full_key)
        self._etag: str = resp["ETag"]
        self._size: int = resp["ContentLength"]
        self._body = resp["Body"]

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            return self._read(size)
        chunks = []
        while chunk := self._read(None):
            chunks.append(chunk)
        return b"".join(chunks)

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer: Any) -> int:
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _read(self, amt: int | None) -> bytes:
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError

        for attempt in range(self._bucket.attempts):
            if self._pos >= self._size:
                return b""
            try:
                data = self._body.read(amt)
            except (BotoCoreError, HTTPError, OSError) as exc:
                if attempt == self._bucket.attempts - 1:
                    where = mask_resident_ids(self._bucket._where(self._key))
                    raise StorageError(
                        f"S3 get_object on {where} broke off at byte {self._pos} of {self._size}, "
                        f"{self._bucket.attempts} times: {type(exc).__name__}"
                    ) from exc
                time.sleep(min(2.0, 0.05 * 2**attempt))
                self._resume()
                continue
            self._pos += len(data)
            return data
        raise AssertionError("unreachable")

    def _resume(self) -> None:
        self._body.close()
        resp = self._bucket._call(
            "get_object", Key=self._key, Range=f"bytes={self._pos}-", IfMatch=self._etag
        )
        self._body = resp["Body"]

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def open_bucket(url: str, *, settings: Settings | None = None) -> Bucket:
    """Open the bucket at ``url``: ``s3://bucket[/prefix]`` or a local folder path.

    Without ``settings``, the S3 endpoint and region are read from the environment, as
    :meth:`Settings.from_env` would.
    """
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        return S3Bucket(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=settings.s3_endpoint_url if settings else s3_endpoint_from_env(),
            region=settings.s3_region if settings else s3_region_from_env(),
        )
    if "://" in url and not url.startswith("file://"):
        raise StorageError(f"unsupported bucket URL {url!r} (use a local path or s3://)")
    return LocalBucket(root=url.removeprefix("file://"))
