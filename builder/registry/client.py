"""The distribution-spec operations on one repository: manifests, blobs, uploads, mounts.

:class:`RepositoryClient` speaks the wire protocol and verifies what it receives;
it knows nothing of images beyond media types (``pull.py``/``push.py`` walk images).
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit, parse_qsl

import requests
import urllib3.exceptions

from builder.image.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
)
from builder.registry.auth import repository_scope
from builder.registry.errors import (
    RegistryError,
    RegistryUnreachableError,
    TransferError,
    UnsupportedManifestError,
    VerificationError,
)
from builder.registry.transport import Transport, _describe, parse_retry_after

log = logging.getLogger(__name__)

DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    DOCKER_MANIFEST_V1_SIGNED,
)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
ACCEPT_MANIFESTS = ", ".join(INDEX_TYPES + MANIFEST_TYPES)

# Manifests are small; anything bigger is hostile (containerd uses the same bound).
MAX_MANIFEST_SIZE = 4 << 20
READ_CHUNK = 1 << 20
DEFAULT_CHUNK_SIZE = 32 << 20
UPLOAD_RESTARTS = 4

_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{_HASHES[algorithm](data).hexdigest()}"


def _hasher(digest: str):
    algo = digest.partition(":")[0]
    try:
        return _HASHES[algo]()
    except KeyError:
        raise VerificationError(f"unsupported digest algorithm {algo!r}") from None


@dataclass(frozen=True)
class Manifest:
    """A fetched manifest or index: its exact bytes, media type and verified digest."""

    content: bytes
    media_type: str
    digest: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def _media_type_of(content: bytes, header: str | None) -> str:
    """The media type from the body's ``mediaType`` field, else the Content-Type header."""
    import json

    try:
        doc = json.loads(content)
    except ValueError:
        raise VerificationError("registry sent a manifest that is not JSON") from None
    if not isinstance(doc, dict):
        raise VerificationError("registry sent a manifest that is not a JSON object")
    media = doc.get("mediaType") or (header or "").split(";")[0].strip()
    if not media:
        if doc.get("schemaVersion") == 1:
            media = DOCKER_SCHEMA1[0]
        elif "manifests" in doc:
            media = OCI_INDEX
        elif "layers" in doc:
            media = OCI_MANIFEST
    return media


class BlobReader(io.RawIOBase):
    """A blob download as a file: resumes with ``Range`` after a dropped connection and
    raises :class:`VerificationError` unless the size matches exactly and (with
    ``verify_digest``) the digest too. Turn the digest check off only when the consumer
    verifies it anyway (the content store does): hashing is most of a pull's CPU."""

    def __init__(
        self, client: "RepositoryClient", digest: str, size: int | None, attempts: int, verify_digest: bool = True
    ) -> None:
        super().__init__()
        self._client = client
        self.digest = digest
        self.size = size
        self._verify_digest = verify_digest
        self._hash = _hasher(digest)
        self._offset = 0
        self._attempts = attempts
        self._resp: requests.Response | None = None
        self._done = False
        self._open(0)

    def readable(self) -> bool:
        return True

    def _open(self, offset: int) -> None:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._client._request("GET", f"blobs/{self.digest}", headers=headers, stream=True)
        self._client.transport.check(resp, f"blob {self.digest[:19]} in {self._client.repository}", ok=(200, 206))
        if offset and resp.status_code == 200:
            # Server ignored Range: start over, hashing from scratch.
            self._hash = _hasher(self.digest)
            self._offset = 0
        elif resp.status_code == 206:
            start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                resp.close()
                raise VerificationError(
                    f"blob {self.digest[:19]}: registry resumed at the wrong offset "
                    f"({resp.headers.get('Content-Range')!r}, wanted {offset})"
                )
        self._resp = resp

    def _reopen(self, why: str) -> None:
        if self._resp is not None:
            self._resp.close()
        self._attempts -= 1
        if self._attempts <= 0:
            raise TransferError(
                f"downloading blob {self.digest[:19]} from {self._client.repository} failed: {why}"
            )
        log.debug("resuming blob %s at %d after %s", self.digest, self._offset, why)
        self._open(self._offset)

    def readinto(self, buffer) -> int:
        if self._done:
            return 0
        want = len(buffer)
        if self.size is not None:
            want = min(want, max(self.size - self._offset, 0) or 1)  # read 1 past the end to detect excess
        while True:
            try:
                data = self._resp.raw.read(want, decode_content=False)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                self._reopen(_describe(exc) if isinstance(exc, requests.RequestException) else type(exc).__name__)
                continue
            if data:
                break
            if self.size is not None and self._offset < self.size:
                self._reopen(f"body ended after {self._offset} of {self.size} bytes")
                continue
            self._finish()
            return 0
        n = len(data)
        if self.size is not None and self._offset + n > self.size:
            self.close()
            raise VerificationError(
                f"blob {self.digest[:19]} from {self._client.repository} is larger than its declared {self.size} bytes"
            )
        if self._verify_digest:
            self._hash.update(data)
        self._offset += n
        buffer[:n] = data
        return n

    def _finish(self) -> None:
        self._done = True
        if self._resp is not None:
            self._resp.close()
        got = f"{self.digest.partition(':')[0]}:{self._hash.hexdigest()}"
        if self._verify_digest and got != self.digest:
            raise VerificationError(
                f"blob from {self._client.repository} does not match its digest: "
                f"expected {self.digest}, got {got}"
            )

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
        super().close()


class RepositoryClient:
    """Protocol operations on ``host/repository`` over a shared :class:`Transport`."""

    def __init__(self, transport: Transport, repository: str, push: bool = False) -> None:
        self.transport = transport
        self.repository = repository
        self.scopes = (repository_scope(repository, "pull,push" if push else "pull"),)

    def _request(self, method: str, path: str, *, scopes: tuple[str, ...] | None = None, **kw) -> requests.Response:
        if not path.startswith(("http://", "https://")):
            path = f"/v2/{self.repository}/{path}"
        return self.transport.request(method, path, scopes=scopes or self.scopes, **kw)

    # -- manifests ---------------------------------------------------------------------
    def get_manifest(self, reference: str, accept: str = ACCEPT_MANIFESTS) -> Manifest:
        """Fetch a manifest or index by tag or digest, bounded in size and verified."""
        name = f"{self.transport.host}/{self.repository}"
        what = f"manifest {name}:{reference}" if ":" not in reference else f"manifest {name}@{reference}"
        attempts = self.transport.options.retry.attempts
        for attempt in range(attempts):
            resp = self._request("GET", f"manifests/{reference}", headers={"Accept": accept}, stream=True)
            self.transport.check(resp, what)
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > MAX_MANIFEST_SIZE:
                resp.close()
                raise VerificationError(f"{what}: manifest of {declared} bytes is too large")
            try:
                content = resp.raw.read(MAX_MANIFEST_SIZE + 1, decode_content=True)
                break
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                # The body was cut: fetch the (small) manifest again.
                if attempt + 1 >= attempts:
                    raise TransferError(f"{what}: download failed ({type(exc).__name__})") from None
                time.sleep(self.transport.options.retry.delay(attempt))
            finally:
                resp.close()
        if len(content) > MAX_MANIFEST_SIZE:
            raise VerificationError(f"{what}: manifest larger than {MAX_MANIFEST_SIZE} bytes")
        media = _media_type_of(content, resp.headers.get("Content-Type"))
        if media in DOCKER_SCHEMA1:
            raise UnsupportedManifestError(
                f"{what} is a Docker schema 1 manifest, which is deprecated and not supported; "
                "re-push the image with a current client"
            )
        if media not in MANIFEST_TYPES + INDEX_TYPES:
            raise UnsupportedManifestError(f"{what}: unsupported manifest media type {media!r}")
        if ":" in reference:  # pinned by digest: the bytes must hash to it
            algo = reference.partition(":")[0]
            if algo not in _HASHES:
                raise VerificationError(f"{what}: unsupported digest algorithm {algo!r}")
            got = digest_bytes(content, algo)
            if got != reference:
                raise VerificationError(f"{what}: content does not match the digest (got {got})")
            digest = reference
        else:
            digest = digest_bytes(content)
            header = resp.headers.get("Docker-Content-Digest")
            if header and header.startswith("sha256:") and header != digest:
                raise VerificationError(f"{what}: content does not match Docker-Content-Digest {header}")
        return Manifest(content, media, digest)

    def head_manifest(self, reference: str) -> str | None:
        """The digest a tag points to (from Docker-Content-Digest), or None if absent."""
        resp = self._request("HEAD", f"manifests/{reference}", headers={"Accept": ACCEPT_MANIFESTS})
        resp.close()
        if resp.status_code == 404:
            return None
        self.transport.check(resp, f"manifest {self.repository}:{reference}")
        return resp.headers.get("Docker-Content-Digest")

    def put_manifest(self, reference: str, content: bytes, media_type: str) -> str:
        """Upload a manifest/index under a tag or digest; returns its digest."""
        resp = self._request(
            "PUT", f"manifests/{reference}", headers={"Content-Type": media_type}, body=content
        )
        self.transport.check(resp, f"pushing manifest {self.repository}:{reference}", ok=(200, 201, 202))
        resp.close()
        digest = digest_bytes(content)
        echoed = resp.headers.get("Docker-Content-Digest")
        if echoed and echoed != digest:
            raise VerificationError(f"registry stored manifest as {echoed}, expected {digest}")
        return digest

    def list_tags(self) -> list[str]:
        resp = self._request("GET", "tags/list")
        self.transport.check(resp, f"tags of {self.repository}")
        try:
            return list(resp.json().get("tags") or [])
        except ValueError:
            raise RegistryError(f"tags of {self.repository}: malformed answer") from None

    # -- blobs -------------------------------------------------------------------------
    def blob_size(self, digest: str) -> int | None:
        """HEAD a blob: its size if the repository has it, else None."""
        resp = self._request("HEAD", f"blobs/{digest}")
        resp.close()
        if resp.status_code == 404:
            return None
        self.transport.check(resp, f"blob {digest[:19]} in {self.repository}")
        length = resp.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else 0

    def open_blob(self, digest: str, size: int | None, verify_digest: bool = True) -> BlobReader:
        """A verified, resuming reader of one blob."""
        return BlobReader(self, digest, size, self.transport.options.retry.attempts, verify_digest)

    def fetch_blob_bytes(self, digest: str, size: int | None, limit: int = MAX_MANIFEST_SIZE * 4) -> bytes:
        """Download a small blob (a config) into memory, verified."""
        if size is not None and size > limit:
            raise VerificationError(f"blob {digest[:19]} declares {size} bytes, more than the {limit} allowed here")
        with self.open_blob(digest, size) as reader:
            data = reader.read(limit + 1)
            if len(data) > limit:
                raise VerificationError(f"blob {digest[:19]} exceeds {limit} bytes")
            # Drain to EOF so the digest check runs.
            if reader.read(1):
                raise VerificationError(f"blob {digest[:19]} exceeds {limit} bytes")
        return data

    # -- uploads -----------------------------------------------------------------------
    def mount_blob(self, digest: str, from_repository: str) -> str | None:
        """Try a cross-repository mount; returns None when mounted, else an upload URL."""
        scopes = self.scopes + (repository_scope(from_repository, "pull"),)
        query = urlencode({"mount": digest, "from": from_repository})
        resp = self._request("POST", f"blobs/uploads/?{query}", scopes=scopes)
        resp.close()
        if resp.status_code == 201:
            return None
        self.transport.check(resp, f"starting upload to {self.repository}", ok=(202,))
        return self._location(resp)

    def start_upload(self) -> str:
        resp = self._request("POST", "blobs/uploads/")
        resp.close()
        self.transport.check(resp, f"starting upload to {self.repository}", ok=(202,))
        return self._location(resp)

    def _location(self, resp: requests.Response) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"registry gave no upload Location for {self.repository}")
        return requests.compat.urljoin(resp.url, loc)

    def upload_blob(
        self,
        digest: str,
        size: int,
        open_content: Callable[[], BinaryIO],
        *,
        mount_from: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> str:
        """Make sure the repository has the blob. Returns ``"exists"``, ``"mounted"`` or ``"uploaded"``.

        An upload that fails midway resumes from the registry's ``Range`` when it can and
        otherwise restarts from a fresh session, up to a bounded number of times.
        """
        if self.blob_size(digest) is not None:
            return "exists"
        location: str | None = None
        if mount_from and mount_from != self.repository:
            location = self.mount_blob(digest, mount_from)
            if location is None:
                return "mounted"
        last_error: Exception | None = None
        for restart in range(UPLOAD_RESTARTS):
            if location is None:
                location = self.start_upload()
            try:
                if size <= chunk_size:
                    self._put_monolithic(location, digest, size, open_content)
                else:
                    self._upload_chunked(location, digest, size, open_content, chunk_size)
                return "uploaded"
            except (RegistryUnreachableError, _UploadBroken) as exc:
                last_error = exc
                log.debug("upload of %s restarting (%s)", digest, exc)
                location = None
                time.sleep(self.transport.options.retry.delay(restart, getattr(exc, "retry_after", None)))
        raise RegistryError(
            f"uploading blob {digest[:19]} to {self.repository} failed {UPLOAD_RESTARTS} times: {last_error}"
        )

    def _put_monolithic(self, location: str, digest: str, size: int, open_content: Callable[[], BinaryIO]) -> None:
        url = _with_query(location, digest=digest)
        with open_content() as fh:
            # Small blobs go as bytes (replayable); big ones stream from the file, whose
            # length requests takes from it (a generator would be sent chunked).
            body = fh.read() if size <= (8 << 20) else fh
            resp = self._request(
                "PUT", url,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                body=body, retry=False,
            )
        self._finish_upload(resp, digest)

    def _upload_chunked(
        self, location: str, digest: str, size: int, open_content: Callable[[], BinaryIO], chunk_size: int
    ) -> None:
        offset = 0
        resumes = 0
        with open_content() as fh:
            while offset < size:
                fh.seek(offset)
                chunk = fh.read(min(chunk_size, size - offset))
                if not chunk:
                    raise RegistryError(f"blob {digest[:19]} is shorter than {size} bytes on disk")
                try:
                    resp = self._request(
                        "PATCH", location, retry=False, body=chunk,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                            "Content-Length": str(len(chunk)),
                        },
                    )
                except RegistryUnreachableError:
                    resp = None
                if resp is None or resp.status_code != 202:
                    if resp is not None:
                        resp.close()
                        if resp.status_code not in (408, 429, 500, 502, 503, 504, 416):
                            self.transport.check(resp, f"uploading blob {digest[:19]}", ok=(202,))
                    resumes += 1
                    if resumes > self.transport.options.retry.attempts:
                        raise _UploadBroken("too many interrupted chunks")
                    retry_after = parse_retry_after(resp.headers.get("Retry-After")) if resp is not None else None
                    time.sleep(self.transport.options.retry.delay(resumes - 1, retry_after))
                    offset = self._upload_progress(location)
                    continue
                resp.close()
                location = self._location(resp)
                offset = self._range_end(resp, offset + len(chunk))
            resp = self._request("PUT", _with_query(location, digest=digest), retry=False,
                                 headers={"Content-Length": "0"})
            self._finish_upload(resp, digest)

    def _upload_progress(self, location: str) -> int:
        """Ask the registry how much of an interrupted upload it holds (its ``Range``)."""
        try:
            resp = self._request("GET", location)
        except RegistryUnreachableError as exc:
            raise _UploadBroken(str(exc)) from None
        resp.close()
        if resp.status_code != 204:
            raise _UploadBroken(f"upload status HTTP {resp.status_code}")
        return self._range_end(resp, None)

    @staticmethod
    def _range_end(resp: requests.Response, fallback: int | None) -> int:
        m = re.fullmatch(r"(?:bytes=)?0-(\d+)", resp.headers.get("Range", "").strip())
        if not m:
            if fallback is None:
                raise _UploadBroken("registry gave no Range for the upload")
            return fallback
        end = int(m.group(1))
        # "0-0" is ambiguous (nothing or one byte): resuming from 0 is always safe.
        return 0 if end == 0 and fallback is None else end + 1

    def _finish_upload(self, resp: requests.Response, digest: str) -> None:
        # 400 (digest invalid: the bytes were damaged on the way), a lost session, or a
        # transient failure: the caller starts a fresh upload.
        if resp.status_code in (400, 404, 408, 416, 429) or resp.status_code >= 500:
            resp.close()
            broken = _UploadBroken(f"HTTP {resp.status_code} finishing the upload")
            broken.retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            raise broken
        self.transport.check(resp, f"uploading blob {digest[:19]} to {self.repository}", ok=(201, 204))
        resp.close()
        echoed = resp.headers.get("Docker-Content-Digest")
        if echoed and echoed != digest:
            raise VerificationError(f"registry stored blob as {echoed}, expected {digest}")


class _UploadBroken(RegistryError):
    """An upload session that cannot be continued: start a new one."""


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
