import hashlib

import pytest

from trex.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore, content_hash, folder_hash


def make_folder(root, order=("a.txt", "sub/b.bin")):
    d = root
    for rel in order:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode() * 3)
    return d


@pytest.mark.parametrize("kind", ["local", "file-url", "memory", "s3"])
def test_put_get_roundtrip(tmp_path, kind, request):
    root = {"local": str(tmp_path / "store"), "file-url": f"file://{tmp_path}/store2",
            "memory": f"memory://trex-test-{tmp_path.name}"}.get(kind) or request.getfixturevalue("s3_root")
    store = ArtifactStore(tmp_path / "home", root=root)
    folder = make_folder(tmp_path / "adapter")
    f = tmp_path / "one.json"
    f.write_text('{"x": 1}')
    h = store.put(folder)
    hf = store.put(f)
    assert h == folder_hash(folder) and hf == hashlib.sha256(f.read_bytes()).hexdigest()
    assert store.put(folder) == h  # idempotent
    got = store.get(h)
    assert got.is_dir() and (got / "sub" / "b.bin").read_bytes() == (folder / "sub" / "b.bin").read_bytes()
    assert content_hash(got) == h and store.verify(h)
    gf = store.get(hf)
    assert gf.read_text() == '{"x": 1}' and gf.name == "one.json"
    assert store.manifest(h)["kind"] == "dir" and store.manifest(hf)["kind"] == "file"
    if kind == "local":
        assert str(got).startswith(str(tmp_path / "store" / h[:2] / h))


def test_folder_hash_covers_names_and_content(tmp_path):
    a = make_folder(tmp_path / "a", ("a.txt", "sub/b.bin"))
    b = make_folder(tmp_path / "b", ("sub/b.bin", "a.txt"))
    assert folder_hash(a) == folder_hash(b)
    (b / "a.txt").write_text("changed")
    assert folder_hash(a) != folder_hash(b)
    (b / "a.txt").rename(b / "c.txt")
    (b / "c.txt").write_bytes(b"a.txt" * 3)
    assert folder_hash(a) != folder_hash(b)


def test_missing_and_bad_hashes(tmp_path):
    store = ArtifactStore(tmp_path, root=tmp_path / "s")
    with pytest.raises(ArtifactNotFound):
        store.get("0" * 64)
    with pytest.raises(ArtifactError):
        store.get("../../etc")
    assert not store.exists("f" * 64)


def test_incomplete_put_is_not_visible(tmp_path):
    store = ArtifactStore(tmp_path, root=tmp_path / "s")
    folder = make_folder(tmp_path / "x")
    h = folder_hash(folder)
    (tmp_path / "s" / h[:2] / h).mkdir(parents=True)  # a crashed put: folder, no manifest
    assert not store.exists(h)
    assert store.put(folder) == h and store.verify(h)


def test_default_root_is_home_artifacts(tmp_path, monkeypatch):
    monkeypatch.delenv("TREX_ARTIFACTS", raising=False)
    f = tmp_path / "x.txt"
    f.write_text("x")
    h = ArtifactStore(tmp_path / "home").put(f)
    assert (tmp_path / "home" / "artifacts" / h[:2] / h / "x.txt").is_file()
    assert (tmp_path / "home" / "artifacts" / h[:2] / f"{h}.json").is_file()
    assert ArtifactStore.for_home(tmp_path / "home").get(h).read_text() == "x"


def test_s3_store_serves_another_node_and_refuses_a_damaged_object(tmp_path, s3_root):
    """Two homes (two nodes, no shared folder) on one S3 root through moto's server: what one
    stores the other gets; an object changed in the bucket is refused on download, never cached."""
    import fsspec

    a = ArtifactStore(tmp_path / "node-a", root=s3_root)
    b = ArtifactStore(tmp_path / "node-b", root=s3_root)
    folder = make_folder(tmp_path / "adapter")
    h = a.put(folder)
    assert b.exists(h) and content_hash(b.get(h)) == h
    assert str(b.get(h)).startswith(str(tmp_path / "node-b" / "cache" / "artifacts"))
    other = make_folder(tmp_path / "other", ("c.txt",))
    h2 = a.put(other)
    fs = fsspec.filesystem("s3")
    fs.pipe(f"{s3_root}/{h2[:2]}/{h2}/c.txt", b"tampered")
    with pytest.raises(ArtifactError, match="does not hash to"):
        b.get(h2)
    assert not (tmp_path / "node-b" / "cache" / "artifacts" / h2[:2] / h2).exists()


def test_refs_name_artifacts_and_refuse_names_that_are_paths(tmp_path, s3_root):
    for root in (str(tmp_path / "store"), s3_root):
        store = ArtifactStore(tmp_path / "home", root=root)
        h = store.put(make_folder(tmp_path / "m"))
        assert store.ref("base-arith-base-0") is None
        store.set_ref("base-arith-base-0", h)
        assert store.ref("base-arith-base-0") == h
        for bad in ("../x", "a/b", "", ".hidden", "x" * 201, None):
            with pytest.raises(ArtifactError, match="not a ref name"):
                store.set_ref(bad, h)
        with pytest.raises(ArtifactNotFound):
            store.set_ref("missing", "0" * 64)


@pytest.mark.parametrize("files", [["../escape"], ["/etc/x"], ["a//b"], [], ["ok", "../../x"], "not an object"])
def test_a_remote_manifest_naming_paths_outside_its_folder_is_refused(tmp_path, s3_root, files):
    import json

    import fsspec

    store = ArtifactStore(tmp_path / "home", root=s3_root)
    h = store.put(make_folder(tmp_path / "m"))
    man = {"hash": h, "kind": "dir", "files": files} if files != "not an object" else ["a list"]
    fsspec.filesystem("s3").pipe(f"{s3_root}/{h[:2]}/{h}.json", json.dumps(man).encode())
    with pytest.raises(ArtifactError, match="manifest"):
        store.get(h)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "home" / "cache" / "escape").exists()
