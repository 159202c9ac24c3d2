import hashlib
import os
import http.server
import threading
from pathlib import Path

import pytest

from actlab import data
from actlab.errors import DataError

MIRROR = os.environ.get("ACTLAB_DATA_DIR")


def _fake_registry(url: str, sha: str, size: int) -> dict:
    return {"toy": {"description": "a toy", "license": "CC0", "files": {"a.txt": {"url": url, "sha256": sha, "bytes": size}}}}


def test_registry_entries_are_complete():
    reg = data.registry()
    assert "wikitext-2" in reg and "tinyshakespeare" in reg
    for name, entry in reg.items():
        assert entry["license"], name
        for file_name, spec in entry["files"].items():
            assert spec["url"].startswith("https://"), (name, file_name)
            assert len(spec["sha256"]) == 64 and spec["bytes"] > 0


@pytest.mark.skipif(not MIRROR, reason="needs ACTLAB_DATA_DIR (the offline mirror)")
def test_mirror_files_verify_against_the_registry():
    text = data.read_text("tinyshakespeare", "input.txt")
    assert text.startswith("First Citizen")
    docs = data.wikitext_documents("test")
    assert len(docs) > 40 and " @-@ " not in docs[0] and "<unk>" not in " ".join(docs[:5])


@pytest.fixture
def web(tmp_path):
    """A local HTTP server over a folder, standing in for a dataset's canonical host."""
    root = tmp_path / "web"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _use_registry(monkeypatch, url: str, sha: str, size: int) -> None:
    monkeypatch.setattr(data, "registry", lambda: _fake_registry(url, sha, size))
    data._store.cache_clear()


def test_download_verifies_and_caches(tmp_path, monkeypatch, web):
    root, base = web
    (root / "a.txt").write_bytes(b"hello activations\n")
    sha = hashlib.sha256(b"hello activations\n").hexdigest()
    _use_registry(monkeypatch, f"{base}/a.txt", sha, 18)
    monkeypatch.setenv("ACTLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ACTLAB_DATA_DIR", raising=False)
    path = data.path("toy", "a.txt")
    assert path.read_bytes() == b"hello activations\n"
    assert path.is_relative_to(tmp_path / "cache")
    (root / "a.txt").unlink()  # the second call must not need the network
    data._verified.clear()
    assert data.path("toy", "a.txt") == path


def test_a_changed_upstream_file_never_enters_the_cache(tmp_path, monkeypatch, web):
    root, base = web
    (root / "a.txt").write_bytes(b"changed upstream")
    _use_registry(monkeypatch, f"{base}/a.txt", "0" * 64, 16)
    monkeypatch.setenv("ACTLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ACTLAB_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        data.path("toy", "a.txt")
    assert "corrupt data file toy/a.txt" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "cache" / "data" / "toy" / "a.txt").exists()


def test_mirror_files_are_copied_into_the_cache_once_verified(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "toy"
    mirror.mkdir(parents=True)
    (mirror / "a.txt").write_bytes(b"from the mirror")
    sha = hashlib.sha256(b"from the mirror").hexdigest()
    _use_registry(monkeypatch, "https://example.invalid/a.txt", sha, 15)
    monkeypatch.setenv("ACTLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ACTLAB_DATA_DIR", str(tmp_path / "mirror"))
    path = data.path("toy", "a.txt")
    assert path.read_bytes() == b"from the mirror" and path.is_relative_to(tmp_path / "cache")
    # A cached file damaged later is replaced from the mirror, not returned.
    path.write_bytes(b"damaged in the cache")
    data._verified.clear()
    assert data.path("toy", "a.txt").read_bytes() == b"from the mirror"


def test_corrupt_file_names_the_file_and_the_fix(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "toy"
    mirror.mkdir(parents=True)
    (mirror / "a.txt").write_bytes(b"tampered")
    _use_registry(monkeypatch, "https://example.invalid/a.txt", "0" * 64, 8)
    monkeypatch.setenv("ACTLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ACTLAB_DATA_DIR", str(tmp_path / "mirror"))
    with pytest.raises(DataError) as info:
        data.path("toy", "a.txt")
    message = str(info.value)
    assert "corrupt data file toy/a.txt" in message and "restore it" in message and "\n" not in message


def test_missing_dataset_offline_says_how_to_fix(tmp_path, monkeypatch):
    # Port 9 on the loopback refuses connections at once, as an offline machine would.
    _use_registry(monkeypatch, "http://127.0.0.1:9/a.txt", "0" * 64, 8)
    monkeypatch.setenv("ACTLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ACTLAB_DATA_DIR", str(tmp_path / "empty-mirror"))
    with pytest.raises(DataError) as info:
        data.path("toy", "a.txt")
    message = str(info.value)
    assert "missing dataset file toy/a.txt" in message and "ACTLAB_DATA_DIR" in message and "\n" not in message


def test_unknown_dataset_lists_the_registry():
    with pytest.raises(DataError, match="wikitext-2"):
        data.path("no-such-dataset", "x.txt")


@pytest.mark.skipif(not MIRROR, reason="needs ACTLAB_DATA_DIR (the offline mirror)")
def test_training_prose_mixes_three_corpora_and_never_holds_the_heldout_split():
    train = data.english_prose("train")
    heldout = data.english_prose("heldout")
    reviews = data.zip_texts("movie-reviews", "movie_reviews.zip", prefix="movie_reviews/")
    speeches = data.zip_texts("state-union", "state_union.zip", prefix="state_union/", encoding="latin-1")
    assert len(reviews) == 2000 and len(speeches) == 65
    assert len(train) == len(data.wikitext_documents("valid")) + 2000 + 65
    assert sum(len(doc.split()) for doc in train) > 1_500_000
    assert not set(heldout) & set(train)
    assert heldout == data.wikitext_documents("test")
    with pytest.raises(ValueError, match="train"):
        data.english_prose("test")
