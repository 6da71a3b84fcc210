"""Object storage as a destination: ``fetch(id, urls, dest="s3://bucket/prefix/",
storage_options={...})``, through fsspec (s3fs, gcsfs, adlfs, ``memory://``, ``file://``).

Imported only when a ``dest`` is a URL: the base install does not need fsspec
(``pip install "ipybgfetch[cloud]"``).

How an object appears: the body streams to a ``.part`` file in the manager's home (the
*staging* folder, ``home/staging/<key>/``), exactly as for a local destination; once its
size and integrity are verified it is uploaded. On object stores (S3, GCS, Azure) a
single PUT and a multipart upload are atomic: the object exists only once complete. On
other filesystems (``file://``, ``memory://``) the upload goes to a temporary name that
is then moved in place. So an object is never partial, and a ``kill -9`` at any moment
leaves either no object (the staged ``.part`` and the checkpoints resume it) or a
complete one.

Object names are fixed when fetch() is called, from the request URLs (so that every
shard of a cluster run and every resumed run uses the same names); a name used twice in
one registration gets a ``-2``, ``-3``... suffix, as on disk. An object already at that
name which ipybgfetch uploaded for the same URL (its metadata says so, and its size is
the one recorded) is kept and not fetched again; so is one whose content matches the
request's ``integrity``. Anything else at that name is never overwritten (as on disk):
the record fails saying so, unless its content is identical or the user asked to
replace (``force=True``, or a new registration under the same id and dest).

Credentials: ``storage_options`` live in memory only (never in the database, the
staging folder or the object metadata). A registration restored in a new process whose
``storage_options`` were not empty waits in the ``needs-credentials`` state for
``job.resume(storage_options={...})``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import posixpath
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .._exceptions import FetchError
from .._integrity import sri_to_hashes, strongest_hashes
from .._names import filename_from_url, safe_filename

if TYPE_CHECKING:
    from .record import RecordData
    from .transfer import RecordContext

__all__ = ["ObjectPath", "RemoteDest", "is_remote", "remote_dest"]

CLOUD_EXTRA = 'pip install "ipybgfetch[cloud]"'
# Stores whose single PUT / multipart upload is atomic and which keep user metadata.
OBJECT_STORES = {
    "s3": "Metadata",
    "s3a": "Metadata",
    "gs": "metadata",
    "gcs": "metadata",
    "az": "metadata",
    "abfs": "metadata",
    "abfss": "metadata",
}
META_URL = "ipybgfetch-url-sha256"  # the source URL's sha256 (never the URL: it may be long
META_SHA256 = "ipybgfetch-sha256"  # or carry a signed query string)
META_SIZE = "ipybgfetch-size"
PART_SIZE = 8 * 2**20  # multipart chunk size (S3's minimum is 5 MiB)
HASH_CHUNK = 2**20


def is_remote(dest: object) -> bool:
    """A dest that names an fsspec URL (``proto://...``), not a local folder."""
    if isinstance(dest, RemoteDest):
        return True
    if isinstance(dest, os.PathLike):
        return False
    return isinstance(dest, str) and "://" in dest and dest.split("://", 1)[0].isidentifier()


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise FetchError(
            f"an object-storage dest needs fsspec: {CLOUD_EXTRA} (for S3; gcsfs or adlfs "
            "for GCS or Azure)"
        ) from None
    return fsspec


def remote_dest(dest: str | RemoteDest, storage_options: dict[str, Any] | None) -> RemoteDest:
    """The checked destination (fetch() time): fsspec and the protocol's package are
    installed, and the bucket (or root folder) exists. Raises FetchError saying what to do."""
    if isinstance(dest, RemoteDest):
        return dest
    if storage_options is not None and not isinstance(storage_options, dict):
        raise FetchError(
            f"storage_options must be a dict (fsspec's options, e.g. {{'key': ..., "
            f"'secret': ...}}), got {type(storage_options).__name__}"
        )
    remote = RemoteDest(dest, storage_options or {})
    remote.check()
    return remote


class RemoteDest:
    """An fsspec destination prefix and the (in-memory only) options to reach it."""

    def __init__(self, url: str, storage_options: dict[str, Any]) -> None:
        fsspec = _fsspec()
        protocol, _, rest = url.partition("://")
        protocol = protocol.lower()
        if not rest.strip("/") and protocol not in ("memory", "file", "local"):
            raise FetchError(
                f"dest {url!r} names no bucket; use e.g. {protocol}://my-bucket/some/prefix/"
            )
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise FetchError(
                f"dest {url!r}: fsspec knows no protocol {protocol!r}; use s3://, gs://, "
                "az://, memory:// or file:// (or a folder path)"
            ) from None
        except ImportError as exc:
            raise FetchError(
                f"dest {url!r} needs a package that is not installed: {exc}. For S3: "
                f"{CLOUD_EXTRA}; for GCS: pip install gcsfs; for Azure: pip install adlfs"
            ) from None
        self.protocol = protocol
        self.url = f"{protocol}://{rest.rstrip('/')}/" if rest.strip("/") else f"{protocol}://"
        self.storage_options = dict(storage_options)
        self.needs_credentials = bool(storage_options)
        self._cls = cls
        self._fs: Any = None
        self.root = cls._strip_protocol(self.url).rstrip("/")
        self.atomic = protocol in OBJECT_STORES
        self.names: list[str] | None = None  # preset object names (a cluster shard's)
        self.listed: asyncio.Future[set[str]] | None = None  # the names there at the start

    @classmethod
    def restored(cls, url: str) -> RemoteDest:
        """The destination of a registration read back from the database (no options)."""
        return cls(url, {})

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = self._cls(**self.storage_options)
        return self._fs

    def set_options(self, storage_options: dict[str, Any]) -> None:
        self.storage_options = dict(storage_options)
        self._fs = None

    def __reduce__(self) -> Any:  # a shard's task carries it; options travel in memory
        return (_rebuild, (self.url, self.storage_options, self.names))

    def __repr__(self) -> str:
        return f"RemoteDest({self.url!r})"

    # -- fetch() time -------------------------------------------------------------------
    def check(self) -> None:
        try:
            if self.atomic:
                bucket = self.root.split("/", 1)[0]
                if not self.fs.exists(bucket):
                    raise FetchError(
                        f"the bucket {bucket!r} of dest {self.url!r} does not exist (or these "
                        "credentials cannot see it); create it first or fix the name"
                    )
            elif self.protocol in ("file", "local"):
                probe = Path(self.root)
                while not probe.exists() and probe != probe.parent:
                    probe = probe.parent
                if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
                    raise FetchError(
                        f"cannot create dest {self.url!r}: {probe} is not a writable folder"
                    )
        except FetchError:
            raise
        except Exception as exc:
            raise FetchError(
                f"cannot reach dest {self.url!r}: {type(exc).__name__}: {exc}; check the "
                "storage_options (endpoint, credentials)"
            ) from None

    def object_path(self, name: str, cache: Path) -> ObjectPath:
        return ObjectPath(self, posixpath.join(self.root, name), self.url + name, cache)

    # -- engine side (blocking: called in an executor) -------------------------------------
    def listing(self) -> set[str]:
        """The object names under the prefix now (one LIST call, not one HEAD per record)."""
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self.root)  # a listing cached by fsspec may be stale
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return set()
        prefix = self.root + "/"
        return {p[len(prefix) :] for p in found if p.startswith(prefix)}

    def existing(self, obj: ObjectPath, url: str, integrity: str | None) -> dict[str, Any] | None:
        """``{"size", "sha256", "content_type"}`` of a complete object at ``obj`` that holds
        this URL's body, else None."""
        found = self._ours(obj, url)
        if found is None:
            return None
        info, size, ours, meta = found
        content_type = str(info.get("ContentType") or info.get("content_type") or "")
        sha = meta.get(META_SHA256, "")
        ours = ours and bool(sha)
        if integrity:
            expected = strongest_hashes(sri_to_hashes(integrity))
            algorithm = expected[0][0]
            if ours and algorithm == "sha256":
                digest = bytes.fromhex(sha)
            else:
                digest, sha = _hash_object(self.fs, obj.path, algorithm)
            if not any(hmac.compare_digest(digest, d) for _, d in expected):
                return None
            return {"size": size, "sha256": sha, "content_type": content_type}
        if ours:
            return {"size": size, "sha256": sha, "content_type": content_type}
        return None

    def _ours(
        self, obj: ObjectPath, url: str
    ) -> tuple[dict[str, Any], int, bool, dict[str, str]] | None:
        """(info, size, whether ipybgfetch uploaded it for this URL at this size, its
        metadata) of the object at ``obj``, or None when there is none."""
        try:
            info = self.fs.info(obj.path)
        except FileNotFoundError:
            return None
        size = int(info.get("size") or 0)
        meta = self._metadata(obj.path, info)
        ours = meta.get(META_URL) == _url_key(url) and meta.get(META_SIZE) == str(size)
        return info, size, ours, meta

    def _metadata(self, path: str, info: dict[str, Any]) -> dict[str, str]:
        meta = info.get("metadata") or info.get("Metadata")
        if meta is None and hasattr(self.fs, "metadata") and self.protocol in ("s3", "s3a"):
            try:
                meta = self.fs.metadata(path)
            except Exception:
                meta = None
        return {str(k).lower(): str(v) for k, v in (meta or {}).items()}

    def taken(self, obj: ObjectPath, url: str, sha256: str) -> bool:
        """Whether an object at ``obj`` holds data that uploading this body would lose:
        it exists, was not uploaded by ipybgfetch for this URL, and its bytes differ."""
        found = self._ours(obj, url)
        if found is None or found[2]:
            return False  # nothing there, or an earlier download of this URL
        return _hash_object(self.fs, obj.path, "sha256")[1] != sha256

    def publish(
        self,
        local: Path,
        obj: ObjectPath,
        *,
        url: str,
        sha256: str,
        ctype: str,
        replace: bool = False,
    ) -> None:
        """Upload the verified file ``local`` as ``obj``: atomically, with the metadata
        that lets a later run recognise it. An object holding other data is never
        overwritten unless ``replace`` (:class:`ObjectTaken`)."""
        fs = self.fs
        if not replace and self.taken(obj, url, sha256):
            raise ObjectTaken(
                f"{obj.url} already exists and holds other data; ipybgfetch never overwrites "
                "an object it did not write: delete it, pick another dest prefix, or fetch "
                "again with force=True (--force) to replace it"
            )
        size = local.stat().st_size
        if self.atomic:
            meta = {META_URL: _url_key(url), META_SHA256: sha256, META_SIZE: str(size)}
            kwargs: dict[str, Any] = {OBJECT_STORES[self.protocol]: meta}
            if self.protocol in ("s3", "s3a"):
                kwargs["chunksize"] = PART_SIZE
                if ctype:
                    kwargs["ContentType"] = ctype
            fs.put_file(str(local), obj.path, **kwargs)
            return
        parent = posixpath.dirname(obj.path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        tmp = f"{obj.path}.{uuid.uuid4().hex[:12]}.part"
        try:
            fs.put_file(str(local), tmp)
            fs.mv(tmp, obj.path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm_file(tmp)
            raise


def _rebuild(url: str, storage_options: dict[str, Any], names: list[str] | None) -> RemoteDest:
    remote = RemoteDest(url, storage_options)
    remote.names = names
    return remote


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()


def _hash_object(fs: Any, path: str, algorithm: str) -> tuple[bytes, str]:
    """(digest in ``algorithm``, sha256 hex) of an object's bytes."""
    main = hashlib.new(algorithm)
    sha = main if algorithm == "sha256" else hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            main.update(chunk)
            if sha is not main:
                sha.update(chunk)
    return main.digest(), sha.hexdigest()


class _Stat:
    def __init__(self, size: int) -> None:
        self.st_size = size


class ObjectPath:
    """``record.response.path`` of an object-storage record: the object's URL (``str()``
    gives it) with the reading half of :class:`pathlib.Path`: ``open()``, ``read_bytes()``,
    ``read_text()``, ``exists()``, ``stat()``, ``name``, ``suffix``. Reads go through fsspec;
    ``local_copy()`` downloads it once into the manager's home (what ``to_pandas()`` reads).
    """

    __slots__ = ("_cache", "_remote", "path", "url")

    def __init__(self, remote: RemoteDest, path: str, url: str, cache: Path) -> None:
        self._remote = remote
        self.path = path  # fsspec's path (no protocol)
        self.url = url
        self._cache = cache

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ObjectPath):
            return self.url == other.url
        if isinstance(other, str):
            return self.url == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def fs(self) -> Any:
        return self._remote.fs

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def stat(self) -> _Stat:
        try:
            return _Stat(int(self.fs.info(self.path)["size"]))
        except FileNotFoundError:
            raise FileNotFoundError(2, "no such object", self.url) from None

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        if any(c in mode for c in "wax+"):
            raise ValueError("response bodies are read-only; use mode 'rb' or 'r'")
        return self.fs.open(self.path, mode, **kwargs)  # type: ignore[no-any-return]

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.path))

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def unlink(self, missing_ok: bool = False) -> None:
        """Delete the object (and the local copy)."""
        with contextlib.suppress(OSError):
            self._cache.unlink()
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def local_copy(self) -> Path:
        """The object's bytes in a local file (downloaded once, re-used while its size
        matches); for readers that need a real file (pandas, archives)."""
        size = self.stat().st_size
        try:
            if self._cache.stat().st_size == size:
                return self._cache
        except OSError:
            pass
        self._cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache.with_name(self._cache.name + f".{uuid.uuid4().hex[:8]}.part")
        try:
            self.fs.get_file(self.path, str(tmp))
            os.replace(tmp, self._cache)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return self._cache


# -- the registration's side -------------------------------------------------------------
def object_names(urls: list[str]) -> list[str]:
    """One object name per URL, unique within the registration (fixed at fetch() time)."""
    taken: set[str] = set()
    names = []
    for url in urls:
        name = safe_filename(filename_from_url(url))
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, dot, ext = name, "", ""
        n = 1
        candidate = name
        while candidate in taken:
            n += 1
            candidate = f"{stem}-{n}{dot}{ext}"
        taken.add(candidate)
        names.append(candidate)
    return names


def assign_paths(job: RecordContext, remote: RemoteDest, names: list[str] | None = None) -> None:
    """Give every record its object (final path) and its staged ``.part`` file."""
    staging = job.dest
    cache = job.host.home / "cache" / job.key
    if names is None:
        names = remote.names or object_names([d.request.url for d in job.records])
    remote.names = names
    for d, name in zip(job.records, names, strict=True):
        d.final_path = remote.object_path(name, cache / f"{d.index}-{safe_filename(name)}")  # type: ignore[assignment]
        d.part_path = staging / f"{d.index}.part"


def restore_paths(job: RecordContext) -> None:
    """A registration read back from the database: its objects and staged files (the
    names are a function of the URLs; a body kept for an error status stays local)."""
    loaded = [d.final_path for d in job.records]
    assign_paths(job, job.remote)
    for d, path in zip(job.records, loaded, strict=True):
        if path is not None and str(path).endswith(".body"):
            d.final_path = path


async def prepare_record(job: RecordContext, data: RecordData) -> bool:
    """Before a record's first request: it targets its object (again, after a retry of a
    record whose error body was kept locally); and if that object is already there,
    complete (same URL, size and sha256 recorded, or the request's integrity matches), the
    record settles as a success without a request. True if it did."""
    remote = job.remote
    if remote is None:
        return False
    if not isinstance(data.final_path, ObjectPath):
        names = remote.names or object_names([d.request.url for d in job.records])
        position = next(i for i, d in enumerate(job.records) if d is data)
        cache = job.host.home / "cache" / job.key
        name = names[position]
        data.final_path = remote.object_path(name, cache / f"{data.index}-{safe_filename(name)}")
        data.part_path = job.dest / f"{data.index}.part"
    obj = data.final_path
    assert isinstance(obj, ObjectPath)
    if data.downloaded or data.request.method != "GET":
        return False
    loop = asyncio.get_running_loop()
    listing = remote.listed
    if listing is None:  # one LIST for the run, shared by its records
        listing = remote.listed = loop.run_in_executor(None, remote.listing)
    try:
        names = await asyncio.shield(listing)
    except Exception:
        return False  # cannot list: fetch, the upload will tell
    if obj.path[len(remote.root) + 1 :] not in names:
        return False
    try:
        found = await loop.run_in_executor(
            None, remote.existing, obj, data.request.url, data.request.integrity
        )
    except Exception:
        return False
    if found is None:
        return False
    import httpx

    from .._models import Response

    data.status = 200
    data.response_url = data.request.url
    headers = {"content-length": str(found["size"])}
    if found["content_type"]:
        headers["content-type"] = found["content_type"]
    data.response_headers = httpx.Headers(headers)
    data.total = found["size"]
    data.sha256 = found["sha256"]
    if data.started is None:
        import time

        data.started = time.time()
    if data.response is None:
        data.response = Response(data)
    job.add_downloaded(data, found["size"] - data.downloaded)
    data.error = ""
    job.settle_record(data, "success", "")
    return True


async def publish(job: RecordContext, data: RecordData) -> None:
    """The verified ``.part`` becomes the object (success) or, for an error status, a
    local file kept in the staging folder (readable through ``record.response``)."""
    remote = job.remote
    part, obj = data.part_path, data.final_path
    assert remote is not None and part is not None and obj is not None
    if not part.exists():
        if data.downloaded:
            raise FileNotFoundError(2, "the staged file disappeared before its upload", str(part))
        part.parent.mkdir(parents=True, exist_ok=True)
        part.touch()  # a 0-byte body
    if not 200 <= data.status <= 299 or not isinstance(obj, ObjectPath):
        kept = part.with_suffix(".body")
        os.replace(part, kept)
        data.final_path = kept
        return
    ctype = data.response_headers.get("content-type", "")
    # Every byte is on disk, verified: say so in the database before the upload, which
    # may take long, so that a process killed meanwhile resumes without a request.
    job.record_changed(data, checkpoint=True)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(
            None,
            lambda: remote.publish(
                part,
                obj,
                url=data.request.url,
                sha256=data.sha256,
                ctype=ctype,
                replace=job.replace_objects,
            ),
        )
    except ObjectTaken:
        raise
    except Exception as exc:
        raise _UploadError(f"cannot upload to {obj.url}: {type(exc).__name__}: {exc}") from exc
    with contextlib.suppress(OSError):
        part.unlink()


class ObjectTaken(Exception):
    """The destination object exists and holds other data: the record fails, the object
    stays as it is."""


class _UploadError(OSError):
    """The upload of a verified body failed (credentials, endpoint, bucket gone)."""
