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
import re
import shutil
import uuid
from pathlib import Path

import fsspec

HEX = set("0123456789abcdef")
_REF_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


PUT_LOCK_TIMEOUT_S = 600.0  # how long a put waits for another process storing the same content


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


def _check_manifest(man, h: str) -> None:
    """A manifest read from a remote store: its kind, and file names that are relative paths of
    plain parts (no ``..``, no absolute path, no empty part), before any of them is downloaded."""
    files = man.get("files") if isinstance(man, dict) else None
    if not isinstance(files, list) or not files or man.get("kind") not in ("dir", "file"):
        raise ArtifactError(f"artifact {h[:12]}…: its manifest is malformed")
    if man["kind"] == "file" and len(files) != 1:
        raise ArtifactError(f"artifact {h[:12]}…: a file artifact's manifest names {len(files)} files")
    for rel in files:
        parts = rel.split("/") if isinstance(rel, str) else [""]
        if rel.startswith("/") or any(p in ("", ".", "..") or "\x00" in p for p in parts):
            raise ArtifactError(f"artifact {h[:12]}…: its manifest names {rel!r}, not a relative file path")


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

    # ------------------------------------------------------------- no links
    def _local_dir(self, path: str | os.PathLike) -> Path:
        """A local folder of the store (or its download cache), created where missing; no folder on the
        way from the home (or, outside the home, from the root or cache folder given) may be a link."""
        from trex.events.fsio import ensure_dir

        p = Path(os.path.abspath(path))  # abspath, not resolve: a link must be seen, not followed
        for base in (self.home, Path(self.root) if self.local else None, self.cache_dir):
            if base is None:
                continue
            base = Path(os.path.abspath(base))
            try:
                rel = p.relative_to(base)
            except ValueError:
                continue
            return ensure_dir(base, *rel.parts)
        return ensure_dir(p)

    def _no_link(self, path: str | os.PathLike) -> Path:
        from trex.events.fsio import check_not_link

        return check_not_link(Path(path))

    @classmethod
    def for_home(cls, home: str | os.PathLike) -> "ArtifactStore":
        return cls(home)

    # ------------------------------------------------------------------ paths
    def _obj(self, h: str) -> str:
        return f"{self.root}/{h[:2]}/{h}"

    def _manifest(self, h: str) -> str:
        return f"{self.root}/{h[:2]}/{h}.json"

    def exists(self, h: str) -> bool:
        m = self._manifest(_check_hash(h))
        if self.local:
            self._no_link(m)  # a manifest that is a link is not this store's: refused, never taken as stored
        return self.fs.exists(m)

    def manifest(self, h: str) -> dict:
        m = self._manifest(_check_hash(h))
        if self.local:
            self._no_link(m)
        try:
            with self.fs.open(m, "rb") as f:
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
            from trex.events.fsio import HomeLock

            tmpdir = self._local_dir(f"{self.root}/tmp")
            with HomeLock(tmpdir / f"{h}.lock", timeout=PUT_LOCK_TIMEOUT_S):
                if self.exists(h):
                    return h
                return self._put(h, kind, files, src_files)
        return self._put(h, kind, files, src_files)

    def _put(self, h: str, kind: str, files: list, src_files: dict) -> str:
        size = sum(p.stat().st_size for p in src_files.values())
        if not self.local:
            return self._put_remote(h, kind, files, src_files, size)
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        final = self._obj(h)
        # a local folder: nothing on the way, and nothing this writes or replaces, is a link
        self._local_dir(f"{self.root}/{h[:2]}")
        self._no_link(final)
        self._no_link(self._manifest(h))
        self._local_dir(tmp)
        try:
            for rel, p in src_files.items():
                dest = f"{tmp}/{rel}"
                self._local_dir(dest.rsplit("/", 1)[0])
                self._no_link(dest)
                self.fs.put_file(str(p), dest)
                fd = os.open(dest, os.O_RDONLY)  # durable before a TrialFinished can name it
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._no_link(final)
            if self.fs.exists(final):  # a crashed earlier put (no manifest): replace it
                self.fs.rm(final, recursive=True)
            os.replace(tmp, final)
        except BaseException:
            try:
                self.fs.rm(tmp, recursive=True)
            except Exception:
                pass
            raise
        from trex.events.fsio import write_file_replace

        man = {"hash": h, "kind": kind, "files": files, "size": size}
        write_file_replace(Path(self._manifest(h)), json.dumps(man, sort_keys=True).encode())
        return h

    def _put_remote(self, h: str, kind: str, files: list, src_files: dict, size: int) -> str:
        """Object storage: each file is one object written whole (an S3 PUT is atomic), straight to
        its content-addressed key; the manifest, written last, is what makes the artifact stored.
        Writers of the same content write the same bytes, so no temporary name or rename is needed
        (object stores rename by copying, and s3fs's recursive move does not carry nested folders)."""
        final = self._obj(h)
        for rel, p in src_files.items():
            self.fs.put_file(str(p), f"{final}/{rel}")
        man = {"hash": h, "kind": kind, "files": files, "size": size}
        self.fs.pipe_file(self._manifest(h), json.dumps(man, sort_keys=True).encode())
        return h

    # -------------------------------------------------------------------- get
    def get(self, h: str) -> Path:
        """A local path of the artifact (the folder, or the file for a file artifact)."""
        man = self.manifest(h)
        if self.local:
            base = self._no_link(self._obj(h))  # an artifact that is a link is not this store's
        else:
            base = self._no_link(self.cache_dir / h[:2] / h)
            if not base.is_dir():
                _check_manifest(man, h)  # names from the bucket never leave the download folder
                tmp = self._local_dir(base.with_name(f".{h}.{uuid.uuid4().hex}"))
                for rel in man["files"]:
                    dest = tmp / rel
                    self._local_dir(dest.parent)
                    self._no_link(dest)
                    self.fs.get_file(f"{self._obj(h)}/{rel}", str(dest))
                got = content_hash(tmp / man["files"][0] if man["kind"] == "file" else tmp)
                if got != h:  # damaged or changed in the bucket: never cached, never used
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise ArtifactError(f"artifact {h[:12]}… downloaded from {self.root} does not hash to its "
                                        f"name (got {got[:12]}…): the stored object is damaged")
                try:
                    os.replace(tmp, base)
                except OSError:
                    shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
        if man["kind"] == "file":
            return base / man["files"][0]
        return base

    # ------------------------------------------------------------------- refs
    def set_ref(self, name: str, h: str) -> None:
        """Name an artifact (``refs/<name>.json``): how a node that did not build a thing finds it
        (a task's base model, built once by the node that prepared the task)."""
        ref = self._ref(name)
        if not self.exists(h):
            raise ArtifactNotFound(f"no artifact {h}")
        body = json.dumps({"hash": h}).encode()
        if self.local:
            from trex.events.fsio import write_file_replace

            self._local_dir(f"{self.root}/refs")
            write_file_replace(Path(ref), body)
        else:
            self.fs.pipe_file(ref, body)

    def ref(self, name: str) -> str | None:
        """The artifact named ``name``, or None."""
        ref = self._ref(name)
        if self.local:
            self._no_link(ref)
        try:
            with self.fs.open(ref, "rb") as f:
                h = json.loads(f.read()).get("hash")
        except (FileNotFoundError, ValueError, AttributeError):
            return None
        try:
            return _check_hash(h)
        except ArtifactError:
            return None

    def _ref(self, name: str) -> str:
        if not isinstance(name, str) or not _REF_NAME.fullmatch(name):
            raise ArtifactError(f"not a ref name: {name!r} (letters, digits, '.', '_', '-'; 1-200)")
        return f"{self.root}/refs/{name}.json"

    def verify(self, h: str) -> bool:
        return content_hash(self.get(h)) == h


# ------------------------------------------------------------------ evaluation outputs on other nodes
_OUTPUTS = re.compile(r"evals/([0-9a-f]{64})\.parquet")


def publish_outputs(home: str | os.PathLike, path: str | os.PathLike) -> None:
    """With the store on object storage, an evaluation's outputs file (``evals/<hash>.parquet`` under
    the home's artifacts, written on the evaluator's node) is stored there too, under the ref
    ``evals-<hash>``, so a Researcher or a report on another node reads it (:func:`evaluation_outputs`)."""
    store = ArtifactStore(home)
    m = _OUTPUTS.fullmatch(f"evals/{Path(path).name}")
    if store.local or m is None:
        return
    name = f"evals-{m.group(1)}"
    if store.ref(name) is None:
        store.set_ref(name, store.put(path))


def evaluation_outputs(home: str | os.PathLike, rel: str) -> Path:
    """The local file of the evaluation outputs ``rel`` (as ``EvaluationFinished.outputs_artifact``
    names them): the home's own, else the copy published by the node that evaluated (downloaded,
    checked against its hash). A name that is not an outputs file's is never made a path."""
    m = _OUTPUTS.fullmatch(rel or "")
    if m is None:
        raise ArtifactError(f"{rel!r} is not an evaluation outputs artifact (evals/<sha256>.parquet)")
    p = Path(home) / "artifacts" / rel
    if p.is_file():
        return p
    store = ArtifactStore(home)
    h = None if store.local else store.ref(f"evals-{m.group(1)}")
    if h is None:
        raise ArtifactNotFound(f"no evaluation outputs {rel} in {p.parent} nor in the artifact store")
    return store.get(h)
