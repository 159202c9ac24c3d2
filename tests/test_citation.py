"""CITATION.cff is valid CFF 1.2 and the README's BibTeX block is derived from it."""

import json
import re
from importlib.util import find_spec
from pathlib import Path

import jsonschema
import yaml


def cff_schema() -> dict:
    # cffconvert ships the CFF 1.2.0 JSON schema; it is installed without its dependencies because its
    # jsonschema<4 pin conflicts with the notebook stack, and the schema is validated with jsonschema 4.
    # Located without importing cffconvert, whose own imports need those dependencies.
    spec = find_spec("cffconvert")
    assert spec and spec.origin, "cffconvert is not installed: run `make setup`"
    return json.loads((Path(spec.origin).parent / "schemas" / "1.2.0" / "schema.json").read_text())


def load_cff(repo_root) -> dict:
    # The schema expects strings for dates and versions, as CFF's own validator reads them.
    return yaml.load((repo_root / "CITATION.cff").read_text(), Loader=yaml.BaseLoader)


def bibtex_from_cff(cff: dict) -> str:
    """The collection's BibTeX entry, from its citation file."""
    authors = " and ".join(a.get("name") or f"{a['family-names']}, {a['given-names']}" for a in cff["authors"])
    authors = f"{{{authors}}}" if all("name" in a for a in cff["authors"]) else authors
    year = cff["date-released"][:4]
    return "\n".join([
        f"@misc{{activations_reproduced_{year},",
        f"  title  = {{{cff['title']}}},",
        f"  author = {{{authors}}},",
        f"  year   = {{{year}}},",
        f"  note   = {{Version {cff['version']}}}",
        "}",
    ])


def test_citation_file_is_valid_cff_1_2(repo_root):
    cff = load_cff(repo_root)
    jsonschema.Draft7Validator(cff_schema()).validate(cff)


def test_the_schema_rejects_a_broken_citation(repo_root):
    cff = load_cff(repo_root)
    del cff["authors"]
    assert list(jsonschema.Draft7Validator(cff_schema()).iter_errors(cff))


def test_readme_bibtex_is_derived_from_the_citation_file(repo_root):
    readme = (repo_root / "README.md").read_text()
    block = re.search(r"```bibtex\n(.*?)\n```", readme, re.S)
    assert block, "README has a ```bibtex block"
    assert block.group(1) == bibtex_from_cff(load_cff(repo_root)), "regenerate it from CITATION.cff"
