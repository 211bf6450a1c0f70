"""Paths and URIs through one interface: a local folder, `file://`, `s3://`, `gs://`, ...

Everything `prepare` writes and training reads goes through a `pyarrow.fs` filesystem, so the same
code serves a laptop folder and a bucket.
"""

from __future__ import annotations

import io
import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from orchestrator.common.errors import InputError
from orchestrator.common.redact import redact_exception, redact_text

# Where an S3-compatible store other than AWS is (MinIO, Ceph, a test server): the variables
# boto3, the AWS CLI and MLflow's S3 artifact store read. pyarrow reads neither, so filesystem()
# passes them on.
S3_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a URI and the path in its terms (`s3://b/x` -> `b/x`).

    For `s3://` the standard AWS settings apply: credentials from AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY (or ~/.aws, or the instance's role), the region from AWS_REGION /
    AWS_DEFAULT_REGION, and the endpoint from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. Options in
    the URI's query (pyarrow's `?endpoint_override=...&scheme=http`) take precedence.
    """
    parts = urllib.parse.urlsplit(uri)
    endpoint = next((os.environ[v] for v in S3_ENDPOINT_VARIABLES if os.environ.get(v)), "")
    if parts.scheme != "s3" or parts.query or not endpoint:
        return pafs.FileSystem.from_uri(uri)
    where = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    s3 = pafs.S3FileSystem(endpoint_override=where.netloc, scheme=where.scheme, region=region)
    return s3, f"{parts.netloc}{parts.path}".rstrip("/")


def uri_of(fs: pafs.FileSystem, path: str) -> str:
    """The URI of `path` on `fs` (a plain path on the local filesystem): what Ray Train's
    checkpoints, which keep a filesystem and a path without its scheme, are called elsewhere."""
    if isinstance(fs, pafs.LocalFileSystem) or "://" in path:
        return path
    scheme = {"s3": "s3", "gcs": "gs"}.get(fs.type_name, fs.type_name)
    return f"{scheme}://{path}"


def absolute(uri_or_path: str) -> str:
    """A URI as it is; a local path made absolute (work runs in other processes and folders)."""
    return uri_or_path if "://" in uri_or_path else str(Path(uri_or_path).expanduser().resolve())


def for_ray(uri_or_path: str) -> tuple[str, pafs.FileSystem | None]:
    """`storage_path` and `storage_filesystem` for Ray Train's and Ray Tune's RunConfig: a local
    path made absolute, or a URI's path with the filesystem `filesystem()` gives it (which
    carries the endpoint of an S3-compatible store; Ray's own URI parsing would not)."""
    if "://" not in uri_or_path:
        return absolute(uri_or_path), None
    fs, path = filesystem(uri_or_path)
    return path, fs


def open_input_file(uri_or_path: str) -> pafs.NativeFile:
    """A seekable file handle for a local path or a filesystem URI."""
    if "://" in uri_or_path:
        fs, path = filesystem(uri_or_path)
        return fs.open_input_file(path)
    return pafs.LocalFileSystem().open_input_file(str(Path(uri_or_path).expanduser().resolve()))


@dataclass(frozen=True)
class Location:
    """A folder on some filesystem."""

    fs: pafs.FileSystem
    path: str  # the folder, in `fs`'s own terms
    uri: str  # as given (or made absolute for local paths)

    @staticmethod
    def of(uri_or_path: str) -> "Location":
        """The folder at a local path or URI; InputError for a URI no filesystem here opens."""
        if "://" in uri_or_path:
            try:
                fs, path = filesystem(uri_or_path)
            except (OSError, ValueError) as error:  # an unknown scheme, a missing library
                raise InputError(
                    f"{redact_text(uri_or_path)}: no filesystem here opens it "
                    f"({redact_exception(error, 160)})"
                ) from None
            return Location(fs, path.rstrip("/"), uri_or_path.rstrip("/"))
        path = str(Path(uri_or_path).expanduser().resolve())
        return Location(pafs.LocalFileSystem(), path, path)

    def join(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def uri_of(self, *parts: str) -> str:
        """A path or URI that Ray Data's readers accept for the file at `parts`."""
        return "/".join([self.uri, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.join(*parts)).type != pafs.FileType.NotFound

    def make_dirs(self, *parts: str) -> None:
        self.fs.create_dir(self.join(*parts), recursive=True)

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole file: to a temporary name first, then moved into place."""
        final = self.join(*parts)
        temporary = final + ".tmp"
        with self.fs.open_output_stream(temporary) as out:
            out.write(data)
        self.fs.move(temporary, final)

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.join(*parts)) as handle:
            return handle.read()

    def write_json(self, value, *parts: str) -> None:
        self.write_bytes(json.dumps(value, indent=1, sort_keys=True).encode(), *parts)

    def read_json(self, *parts: str):
        return json.loads(self.read_bytes(*parts))

    def write_arrays(self, arrays: dict[str, np.ndarray], *parts: str) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.write_bytes(buffer.getvalue(), *parts)

    def read_arrays(self, *parts: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self.read_bytes(*parts)), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def delete_dir(self, *parts: str) -> None:
        if self.exists(*parts):
            self.fs.delete_dir(self.join(*parts))

    def names(self, *parts: str) -> list[str]:
        """The names directly inside the folder at `parts` ([] when it does not exist)."""
        selector = pafs.FileSelector(self.join(*parts), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))
