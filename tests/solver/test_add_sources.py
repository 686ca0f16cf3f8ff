"""ADD reads local archives as COPY reads sources: no link swapped in, no FIFO, the digest it keyed on."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from builder.solver.ops import StepFailed, _DigestCheckingReader, _open_source_file


def a_tar(tmp_path):
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return path, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_fifo_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(StepFailed, match="stopped being a regular file"):
        _open_source_file(tmp_path / "pipe", "pipe")


def test_a_symlink_swapped_in_is_not_followed(tmp_path):
    (tmp_path / "link.tar").symlink_to("/etc/passwd")
    with pytest.raises(StepFailed, match="cannot read 'link.tar'"):
        _open_source_file(tmp_path / "link.tar", "link.tar")


def test_content_that_changed_since_the_cache_key_is_refused(tmp_path):
    path, digest = a_tar(tmp_path)
    with _open_source_file(path, "a.tar") as fh:
        reader = _DigestCheckingReader(fh, digest, "a.tar")
        assert tarfile.open(fileobj=reader, mode="r|").next().name == "hello.txt"
        reader.finish()  # same bytes: fine
    with _open_source_file(path, "a.tar") as fh:
        reader = _DigestCheckingReader(fh, "sha256:" + "0" * 64, "a.tar")
        with pytest.raises(StepFailed, match="changed in the build context"):
            reader.finish()
