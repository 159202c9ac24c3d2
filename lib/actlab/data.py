"""A registry of the public datasets the notebooks read, verified by sha256, kept with pooch.

Every file has a canonical URL and a sha256 in ``datasets.json``. pooch keeps the cache
(``<actlab cache>/data/<dataset>/<file>``) and checks every hash. A file missing from the
cache is fetched by :class:`MirrorOrWeb`: it copies the file from an offline mirror when
``ACTLAB_DATA_DIR`` points to one laid out as ``<dataset>/<file>``, and downloads it from its
canonical URL otherwise. Either way the hash is checked before the file enters the cache,
and every failure ends in one line that names the fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pooch

from .errors import DataError
from .models import cache_dir

DATA_DIR_ENV = "ACTLAB_DATA_DIR"
DOWNLOAD_TIMEOUT_S = 30

# pooch announces every fetch at INFO level; a copy from the mirror is not news.
pooch.get_logger().setLevel(logging.WARNING)


@dataclass(frozen=True)
class DataFile:
    dataset: str
    name: str
    url: str
    sha256: str
    size: int

    @property
    def key(self) -> str:
        """The file's name in the pooch registry and its path under the cache."""
        return f"{self.dataset}/{self.name}"


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


def mirror_path(spec: DataFile) -> Path | None:
    """Where the offline mirror keeps a file, when ``ACTLAB_DATA_DIR`` is set and holds it."""
    mirror = os.environ.get(DATA_DIR_ENV)
    if not mirror:
        return None
    candidate = Path(mirror).expanduser() / spec.dataset / spec.name
    return candidate if candidate.is_file() else None


class MirrorOrWeb:
    """A pooch downloader: copy from the ``ACTLAB_DATA_DIR`` mirror if it has the file, else download.

    pooch hands it a temporary file beside the cache entry and checks the hash afterwards,
    so a corrupt mirror file or a changed upstream file never enters the cache.
    """

    def __init__(self, spec: DataFile, allow_web: bool = True):
        self.spec = spec
        self.allow_web = allow_web
        self.used_mirror = False

    def __call__(self, url: str, output_file: str, pooch_obj: pooch.Pooch | None = None) -> None:
        source = mirror_path(self.spec)
        if source is not None:
            self.used_mirror = True
            shutil.copyfile(source, output_file)
            return
        if not self.allow_web:
            raise DataError(f"data file {self.spec.key} is not cached: download it or set {DATA_DIR_ENV}")
        pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S)(url, output_file, pooch_obj)


@lru_cache(maxsize=4)
def _store(root: str) -> pooch.Pooch:
    files = [data_file(name, file_name) for name in datasets() for file_name in registry()[name]["files"]]
    return pooch.create(path=root, base_url="", registry={f.key: f"sha256:{f.sha256}" for f in files},
                        urls={f.key: f.url for f in files}, allow_updates=True)


# pooch hashes a cached file on every fetch; once per process is enough (keyed by path, size and mtime).
_verified: set[tuple[str, int, int]] = set()


def _already_verified(cached: Path) -> bool:
    if not cached.is_file():
        return False
    stat = cached.stat()
    return (str(cached), stat.st_size, stat.st_mtime_ns) in _verified


def path(dataset: str, name: str, download: bool = True) -> Path:
    """Local path of a verified dataset file: from the cache, else the mirror, else its URL."""
    spec = data_file(dataset, name)
    root = cache_dir() / "data"
    cached = root / spec.key
    if _already_verified(cached):
        return cached
    fetcher = MirrorOrWeb(spec, allow_web=download)
    try:
        found = Path(_store(str(root)).fetch(spec.key, downloader=fetcher))
    except DataError:
        raise
    except ValueError as exc:  # pooch's hash mismatch
        if fetcher.used_mirror:
            fix = f"restore it in the mirror {DATA_DIR_ENV} points to, or unset it"
        else:
            fix = "the source may have changed; report it, or set a mirror with " + DATA_DIR_ENV
        actual = re.search(r"but got ([0-9a-f]{12})", str(exc))
        got = f"sha256 {actual.group(1)}... " if actual else "its sha256 "
        raise DataError(
            f"corrupt data file {spec.key}: {got}is not the registry's {spec.sha256[:12]}...; {fix}"
        ) from None
    except OSError as exc:  # requests' errors derive from OSError (IOError)
        raise DataError(
            f"missing dataset file {spec.key}: download from {spec.url} failed ({type(exc).__name__}); "
            f"go online, or set {DATA_DIR_ENV} to an offline mirror of the data"
        ) from None
    stat = found.stat()
    _verified.add((str(found), stat.st_size, stat.st_mtime_ns))
    return found


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
