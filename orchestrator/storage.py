"""Paths and URIs through one interface: a local folder, `file://`, `s3://`, `gs://`, ...

Everything `prepare` writes and training reads goes through a `pyarrow.fs` filesystem, so the same
code serves a laptop folder and a bucket.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs


def open_input_file(uri_or_path: str) -> pafs.NativeFile:
    """A seekable file handle for a local path or a filesystem URI."""
    if "://" in uri_or_path:
        fs, path = pafs.FileSystem.from_uri(uri_or_path)
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
        if "://" in uri_or_path:
            fs, path = pafs.FileSystem.from_uri(uri_or_path)
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
