"""Where a corpus lives: a local path, or an `s3://bucket/key` URI on S3 or an S3-compatible store.

S3 goes through pyarrow's filesystem layer (`pyarrow.fs.S3FileSystem`, in pyarrow itself: no extra
package). Its settings come from the usual AWS environment variables:

- `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`: an S3-compatible server (MinIO, Ceph, R2, moto...);
- `AWS_REGION` / `AWS_DEFAULT_REGION`: the region (default us-east-1);
- credentials: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`), `AWS_PROFILE`, the
  shared credentials file, a web identity token (EKS) or container credentials (ECS / EKS pod identity);
  an instance role (EC2) is used when `AWS_EC2_METADATA_DISABLED=false` is set explicitly.

A URI without any of those is refused with one line before anything runs, as is a bucket that does not exist.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from pathlib import Path
from typing import Any

from bertkit.errors import StorageError

log = logging.getLogger(__name__)

SCHEME = "s3://"
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def is_remote(location: str | Path) -> bool:
    return str(location).startswith(SCHEME)


def _has_credentials() -> bool:
    if any(os.environ.get(v) for v in CREDENTIAL_VARIABLES):
        return True
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "false":
        return True  # the instance role, asked for explicitly
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")]
    return any(Path(f).expanduser().is_file() for f in files)


def s3_filesystem(uri: str):
    """The S3 filesystem for `uri`, configured from the environment; refused without credentials."""
    if not _has_credentials():
        raise StorageError(f"{uri}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                           "(or AWS_PROFILE), and AWS_ENDPOINT_URL for an S3-compatible server")
    return _s3_filesystem(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))


@functools.lru_cache(maxsize=4)
def _s3_filesystem(aws_environment: tuple[tuple[str, str], ...]):
    """One filesystem per AWS_* environment (a reader opens the input once per shard)."""
    from pyarrow import fs as pafs

    options: dict[str, Any] = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                               or "us-east-1"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_override"] = endpoint
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        options.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                       session_token=os.environ.get("AWS_SESSION_TOKEN"))
    # Fail fast on an unreachable endpoint instead of the SDK's long default retries.
    options.update(connect_timeout=5, request_timeout=60,
                   retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
    return pafs.S3FileSystem(**options)


def split(uri: str) -> tuple[str, str]:
    """('bucket', 'bucket/key/without/trailing/slash') of an s3:// URI."""
    path = uri[len(SCHEME):].strip("/")
    bucket = path.split("/", 1)[0]
    if not bucket:
        raise StorageError(f"{uri}: name a bucket, as in s3://bucket/prefix")
    return bucket, path


def check_bucket(fs, uri: str) -> str:
    """The path of `uri` inside `fs`, once its bucket is known to exist (one clear line if not)."""
    from pyarrow import fs as pafs

    bucket, path = split(uri)
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        raise StorageError(f"{uri}: cannot reach the object store ({str(e).splitlines()[0][:200]}); check "
                           "AWS_ENDPOINT_URL and the credentials") from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{uri}: bucket {bucket!r} does not exist; create it or fix the URI")
    return path


def file_info(location: str) -> tuple[bool, int, int]:
    """(exists as a file, size, mtime in ns) of a local path or an s3:// object."""
    if not is_remote(location):
        p = Path(location)
        if not p.is_file():
            return False, 0, 0
        st = p.stat()
        return True, st.st_size, st.st_mtime_ns
    from pyarrow import fs as pafs

    fs = s3_filesystem(location)
    info = fs.get_file_info(check_bucket(fs, location))
    if info.type != pafs.FileType.File:
        return False, 0, 0
    return True, info.size, info.mtime_ns or 0


def open_input(location: str, buffer: int = 1 << 20) -> io.BufferedIOBase:
    """A seekable, buffered binary reader of a local path or an s3:// object."""
    if not is_remote(location):
        return open(location, "rb")
    fs = s3_filesystem(location)
    return io.BufferedReader(fs.open_input_file(split(location)[1]), buffer)


def parquet_file(location: str):
    """A pyarrow ParquetFile over a local path or an s3:// object."""
    import pyarrow.parquet as pq

    if not is_remote(location):
        return pq.ParquetFile(location)
    return pq.ParquetFile(s3_filesystem(location).open_input_file(split(location)[1]))
