"""A registry of the public datasets the notebooks read, verified by sha256.

Online, a file is downloaded once from its canonical URL into the actlab cache
and verified. Offline, set ``ACTLAB_DATA_DIR`` to a mirror laid out as
``<dataset>/<file>``; its files are verified against the same hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import DataError
from .models import cache_dir

DATA_DIR_ENV = "ACTLAB_DATA_DIR"


@dataclass(frozen=True)
class DataFile:
    dataset: str
    name: str
    url: str
    sha256: str
    size: int


@lru_cache(maxsize=1)
def registry() -> dict[str, dict]:
    """The registry: dataset name -> description, licence and files (url, sha256, bytes)."""
    text = resources.files("actlab").joinpath("datasets.json").read_text(encoding="utf-8")
    return json.loads(text)


def datasets() -> list[str]:
    return sorted(registry())


def describe(dataset: str) -> dict:
    """Description, licence and file list of one dataset."""
    return registry()[_check_dataset(dataset)]


def _check_dataset(dataset: str) -> str:
    if dataset not in registry():
        raise DataError(f"unknown dataset '{dataset}': the registry has {', '.join(datasets())}")
    return dataset


def data_file(dataset: str, name: str) -> DataFile:
    files = registry()[_check_dataset(dataset)]["files"]
    if name not in files:
        raise DataError(f"dataset '{dataset}' has no file '{name}': it has {', '.join(sorted(files))}")
    entry = files[name]
    return DataFile(dataset, name, entry["url"], entry["sha256"], entry["bytes"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# Hashing a file once per process is enough; key by path, size and mtime so edits are seen.
_verified: set[tuple[str, int, int]] = set()


def _verify(path: Path, spec: DataFile, fix: str) -> Path:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return path
    actual = _sha256(path)
    if actual != spec.sha256:
        raise DataError(
            f"corrupt data file {spec.dataset}/{spec.name}: sha256 {actual[:12]}... is not the registry's "
            f"{spec.sha256[:12]}...; {fix}"
        )
    _verified.add(key)
    return path


def path(dataset: str, name: str, download: bool = True) -> Path:
    """Local path of a verified dataset file, downloading it into the cache if needed."""
    spec = data_file(dataset, name)
    mirror = os.environ.get(DATA_DIR_ENV)
    if mirror:
        candidate = Path(mirror).expanduser() / dataset / name
        if candidate.is_file():
            return _verify(candidate, spec, f"restore it in the mirror {DATA_DIR_ENV} points to, or unset it")
    cached = cache_dir() / "data" / dataset / name
    if cached.is_file():
        return _verify(cached, spec, f"delete {cached} to download it again")
    if not download:
        raise DataError(f"data file {dataset}/{name} is not cached: download it or set {DATA_DIR_ENV}")
    _download(spec, cached)
    return _verify(cached, spec, f"delete {cached} and retry; the source may have changed")


def _download(spec: DataFile, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(spec.url, timeout=30) as response:
            with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, prefix=".part-") as tmp:
                while block := response.read(1 << 20):
                    tmp.write(block)
        os.replace(tmp.name, dest)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"missing dataset file {spec.dataset}/{spec.name}: download from {spec.url} failed ({reason}); "
            f"go online, or set {DATA_DIR_ENV} to an offline mirror of the data"
        ) from None


def read_text(dataset: str, name: str) -> str:
    """A verified text file's contents (UTF-8; Windows line endings normalised)."""
    return path(dataset, name).read_text(encoding="utf-8").replace("\r\n", "\n")


def read_json(dataset: str, name: str) -> object:
    return json.loads(read_text(dataset, name))


def read_jsonl(dataset: str, name: str) -> list[dict]:
    return [json.loads(line) for line in read_text(dataset, name).splitlines() if line.strip()]


def _untokenize(text: str) -> str:
    """Moses-style spacing around punctuation back to ordinary prose."""
    text = re.sub(r" ([,.;:!?)\]]|'s|n't|'re|'ve|'ll|'d|'m)(?=\s|$)", r"\1", text)
    return re.sub(r"([(\[]) ", r"\1", text)


def wikitext_documents(split: str = "test") -> list[str]:
    """WikiText-2 (word-level release) as articles, with the tokenisation markers undone.

    The release spaces out hyphens and number separators (``@-@``, ``@,@``,
    ``@.@``) and writes rare words as ``<unk>``; both are reverted or dropped
    so that a subword tokenizer sees ordinary prose.
    """
    text = read_text("wikitext-2", f"{'valid' if split == 'valid' else 'test'}.txt")
    for marker, plain in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" <unk>", ""), ("<unk>", "")):
        text = text.replace(marker, plain)
    text = _untokenize(text)
    documents: list[list[str]] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            continue
        is_title = stripped.startswith("= ") and not stripped.startswith("= =")
        if is_title or not documents:
            documents.append([])
        if not stripped.startswith("="):
            documents[-1].append(stripped)
    return [" ".join(paragraphs) for paragraphs in documents if paragraphs]


def zip_texts(dataset: str, name: str, prefix: str = "", encoding: str = "utf-8") -> dict[str, str]:
    """The text members of a verified zip file (kept byte for byte in the mirror), by member name, sorted.

    ``prefix`` keeps only members under that folder of the archive (``"movie_reviews/pos/"``);
    folders and README files are left out.
    """
    import zipfile

    with zipfile.ZipFile(path(dataset, name)) as archive:
        members = sorted(m for m in archive.namelist()
                         if m.startswith(prefix) and not m.endswith("/") and "README" not in m.upper())
        return {m: archive.read(m).decode(encoding).replace("\r\n", "\n") for m in members}


def english_prose(split: str = "train") -> list[str]:
    """The collection's English prose, as documents, by split.

    ``"train"``: WikiText-2 valid, the 2,000 movie reviews and the 65 State of the Union
    addresses, the text shared artifacts (the standard SAEs) train on. ``"heldout"``:
    WikiText-2 test, which no shared artifact trains on and notebooks evaluate on.
    """
    return list(_english_prose(split))


@lru_cache(maxsize=2)
def _english_prose(split: str) -> tuple[str, ...]:
    if split == "heldout":
        return tuple(wikitext_documents("test"))
    if split != "train":
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    reviews = zip_texts("movie-reviews", "movie_reviews.zip", prefix="movie_reviews/")
    speeches = zip_texts("state-union", "state_union.zip", prefix="state_union/", encoding="latin-1")
    # Interleave the sources so that any prefix of the stream mixes all three.
    # The reviews are lower-cased and tokenised one sentence a line; they are rejoined as paragraphs.
    sources = [wikitext_documents("valid"), [_untokenize(" ".join(r.split())) for r in reviews.values()],
               [" ".join(s.split()) for s in speeches.values()]]
    mixed: list[str] = []
    for i in range(max(len(s) for s in sources)):
        mixed += [s[i] for s in sources if i < len(s)]
    return tuple(mixed)
