"""Content-addressed artifact store (datasets, adapters, evaluation outputs) over fsspec.

An artifact is a file or a folder. Its hash is the sha256 of the file's bytes, or
for a folder the sha256 over ``"<relative path>\\0<file sha256>\\n"`` of its files in
sorted order. Layout under the root (a local folder or any fsspec URL)::

    <hh>/<hash>/            the folder (or, for a file artifact, a folder with the one file)
    <hh>/<hash>.json        manifest, written last: its presence means the artifact is complete

Objects are written under a temporary name and renamed into place.

    store = ArtifactStore(home)                  # root HOME/artifacts (or $TREX_ARTIFACTS)
    store = ArtifactStore(home, root="memory://x")   # any fsspec URL as the root
    h = store.put("adapter_dir")                 # -> hash
    local = store.get(h)                         # -> local path (downloaded for remote roots)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import fsspec

HEX = set("0123456789abcdef")


class ArtifactError(Exception):
    pass


class ArtifactNotFound(ArtifactError, KeyError):
    pass


def file_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fn in filenames:
            p = Path(dirpath) / fn
            if p.is_symlink():
                raise ArtifactError(f"{p}: symlinks are not stored in artifacts")
            out.append(p.relative_to(folder).as_posix())
    return sorted(out)


def folder_hash(folder: str | os.PathLike) -> str:
    folder = Path(folder)
    h = hashlib.sha256()
    for rel in _files(folder):
        h.update(f"{rel}\0{file_hash(folder / rel)}\n".encode())
    return h.hexdigest()


def content_hash(path: str | os.PathLike) -> str:
    p = Path(path)
    if p.is_dir():
        return folder_hash(p)
    if p.is_file():
        return file_hash(p)
    raise ArtifactError(f"{p}: no such file or folder")


_BASE_HASHES: dict[tuple[str, int, int], str] = {}  # a memo (path, newest mtime, entries) -> hash: only a cache


def base_model_hash(path: str | os.PathLike) -> str:
    """Content hash of a base model folder (memoised on path + mtime of its folder listing): what the
    Executor's work key and the Evaluator's score cache know a base model by."""
    p = Path(path).resolve()
    st = max((f.stat().st_mtime_ns for f in p.iterdir()), default=0)
    key = (str(p), st, len(list(p.iterdir())))
    if key not in _BASE_HASHES:
        _BASE_HASHES[key] = content_hash(p)
    return _BASE_HASHES[key]


def _check_hash(h: str) -> str:
    if not isinstance(h, str) or len(h) != 64 or not set(h) <= HEX:
        raise ArtifactError(f"not an artifact hash: {h!r}")
    return h


class ArtifactStore:
    """The artifact store of a trex home.

    ``home`` is the (local) trex home; ``root`` the store's root, a folder or an fsspec
    URL (default ``$TREX_ARTIFACTS`` or ``HOME/artifacts``); ``cache_dir`` where remote
    artifacts are downloaded (default ``HOME/cache/artifacts``).
    """

    def __init__(self, home: str | os.PathLike, root: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None):
        self.home = Path(home)
        if root is None:
            root = os.environ.get("TREX_ARTIFACTS") or str(self.home / "artifacts")
        root = str(root)
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.root = self.root.rstrip("/")
        self.local = getattr(self.fs, "protocol", None) in ("file", ("file", "local")) or \
            type(self.fs).__name__ == "LocalFileSystem"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.home / "cache" / "artifacts"

    @classmethod
    def for_home(cls, home: str | os.PathLike) -> "ArtifactStore":
        return cls(home)

    # ------------------------------------------------------------------ paths
    def _obj(self, h: str) -> str:
        return f"{self.root}/{h[:2]}/{h}"

    def _manifest(self, h: str) -> str:
        return f"{self.root}/{h[:2]}/{h}.json"

    def exists(self, h: str) -> bool:
        return self.fs.exists(self._manifest(_check_hash(h)))

    def manifest(self, h: str) -> dict:
        try:
            with self.fs.open(self._manifest(_check_hash(h)), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact {h}") from None

    # -------------------------------------------------------------------- put
    def put(self, path: str | os.PathLike) -> str:
        """Store a file or folder; returns its content hash (a no-op if already stored)."""
        src = Path(path)
        if src.is_dir():
            kind, files = "dir", _files(src)
            h = folder_hash(src)
        elif src.is_file():
            kind, files = "file", [src.name]
            h = file_hash(src)
            src_files = {src.name: src}
        else:
            raise ArtifactError(f"{src}: no such file or folder")
        if self.exists(h):
            return h
        if kind == "dir":
            src_files = {rel: src / rel for rel in files}
        if self.local:  # two processes storing the same content: one writes, the other finds it stored
            from filelock import FileLock

            os.makedirs(f"{self.root}/tmp", exist_ok=True)
            with FileLock(f"{self.root}/tmp/{h}.lock"):
                if self.exists(h):
                    return h
                return self._put(h, kind, files, src_files)
        return self._put(h, kind, files, src_files)

    def _put(self, h: str, kind: str, files: list, src_files: dict) -> str:
        size = sum(p.stat().st_size for p in src_files.values())
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        final = self._obj(h)
        self.fs.makedirs(tmp, exist_ok=True)
        try:
            for rel, p in src_files.items():
                dest = f"{tmp}/{rel}"
                parent = dest.rsplit("/", 1)[0]
                self.fs.makedirs(parent, exist_ok=True)
                self.fs.put_file(str(p), dest)
                if self.local:  # durable before a TrialFinished can name it
                    fd = os.open(dest, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            self.fs.makedirs(f"{self.root}/{h[:2]}", exist_ok=True)
            if self.fs.exists(final):  # a crashed earlier put (no manifest): replace it
                self.fs.rm(final, recursive=True)
            if self.local:
                os.replace(tmp, final)
            else:
                self.fs.mv(tmp, final, recursive=True)
        except BaseException:
            try:
                self.fs.rm(tmp, recursive=True)
            except Exception:
                pass
            raise
        man = {"hash": h, "kind": kind, "files": files, "size": size}
        mtmp = f"{self.root}/tmp/{uuid.uuid4().hex}.json"
        with self.fs.open(mtmp, "wb") as f:
            f.write(json.dumps(man, sort_keys=True).encode())
        if self.local:
            os.replace(mtmp, self._manifest(h))
        else:
            self.fs.mv(mtmp, self._manifest(h))
        return h

    # -------------------------------------------------------------------- get
    def get(self, h: str) -> Path:
        """A local path of the artifact (the folder, or the file for a file artifact)."""
        man = self.manifest(h)
        if self.local:
            base = Path(self._obj(h))
        else:
            base = self.cache_dir / h[:2] / h
            if not base.is_dir():
                tmp = base.with_name(f".{h}.{uuid.uuid4().hex}")
                tmp.mkdir(parents=True)
                for rel in man["files"]:
                    dest = tmp / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(f"{self._obj(h)}/{rel}", str(dest))
                try:
                    os.replace(tmp, base)
                except OSError:
                    shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
        if man["kind"] == "file":
            return base / man["files"][0]
        return base

    def verify(self, h: str) -> bool:
        return content_hash(self.get(h)) == h
