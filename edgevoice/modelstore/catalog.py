"""The model catalog: which models exist, where their bytes are and how to check them.

Loaded from YAML (the bundled file, a file, or a URL) and validated strictly, because a
catalog decides what is written into the models dir: names and targets must be plain file
names, URLs http(s), checksums well formed, and a missing checksum must be declared
(``pin: first-download``) rather than silently left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

import yaml

from edgevoice.modelstore.errors import CatalogError

KINDS = ("llm", "asr", "tts", "turn")
ARCHIVES = ("zip",)
PIN_FIRST_DOWNLOAD = "first-download"
DEFAULT_LLM = "gemma-4-e2b-it"
"""The catalog's language model that `llm.model: null` means (when it is downloaded)."""
BUNDLED = "bundled"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_KEYS = {"name", "kind", "description", "url", "target", "size", "sha256", "pin",
               "license", "archive", "memory"}
_LICENSE_KEYS = {"title", "url", "accept", "notice"}
MAX_REMOTE_CATALOG = 1 << 20


@dataclass(frozen=True)
class License:
    id: str
    title: str
    url: str
    accept: bool
    """True: the user must accept the terms once before the first download."""
    notice: str = ""


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    kind: str
    description: str
    url: str
    target: str
    """File (or folder, for an archive) name inside the models dir."""
    size: int
    """Download size in bytes: exact when ``sha256`` is set, else an estimate."""
    sha256: Optional[str]
    """None means trust on first use: pinned in pins.json by the first download."""
    license: License
    archive: Optional[str] = None
    memory: Optional[int] = None
    """Bytes of RAM it needs to run (weights, caches, buffers), None when not known."""

    @property
    def size_exact(self) -> bool:
        return self.sha256 is not None

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_LLM


@dataclass(frozen=True)
class Catalog:
    source: str
    """Where it came from: ``bundled``, a file path or a URL (for messages)."""
    entries: tuple[CatalogEntry, ...]
    licenses: dict[str, License]

    def get(self, name: str) -> Optional[CatalogEntry]:
        for entry in self.entries:
            if entry.name == name:
                return entry
        return None

    def require(self, name: str) -> CatalogEntry:
        entry = self.get(name)
        if entry is None:
            import difflib

            names = [e.name for e in self.entries]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" — did you mean `{close[0]}`?" if close else ""
            raise CatalogError(f"no model named `{name}` in the catalog ({self.source}){hint} "
                               f"(known: {', '.join(names)}; see `edgevoice models list`)")
        return entry


def bundled_catalog_path() -> Path:
    """The catalog shipped inside the package (package data)."""
    return Path(str(resources.files("edgevoice.modelstore").joinpath("catalog.yaml")))


def _fail(source: str, where: str, message: str) -> CatalogError:
    return CatalogError(f"catalog {source}: {where}{message}")


def _plain_name(value, source: str, where: str, key: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise _fail(source, where, f"`{key}` must be a plain file name (letters, digits, "
                                   f"`._+-`, no slashes), got {value!r}")
    return value


def _parse_license(lid: str, data, source: str) -> License:
    where = f"license `{lid}`: "
    if not isinstance(data, dict):
        raise _fail(source, where, "must be a mapping")
    unknown = set(data) - _LICENSE_KEYS
    if unknown:
        raise _fail(source, where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    title, url, accept = data.get("title"), data.get("url"), data.get("accept", False)
    if not isinstance(title, str) or not title:
        raise _fail(source, where, "`title` is required")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise _fail(source, where, "`url` must be an http(s) URL of the terms")
    if not isinstance(accept, bool):
        raise _fail(source, where, "`accept` must be true or false")
    notice = data.get("notice") or ""
    if not isinstance(notice, str):
        raise _fail(source, where, "`notice` must be text")
    return License(id=lid, title=title, url=url, accept=accept, notice=" ".join(notice.split()))


def _parse_entry(index: int, data, licenses: dict[str, License], source: str) -> CatalogEntry:
    label = data.get("name") if isinstance(data, dict) else None
    where = f"model `{label}`: " if isinstance(label, str) else f"models[{index}]: "
    if not isinstance(data, dict):
        raise _fail(source, where, "must be a mapping")
    unknown = set(data) - _ENTRY_KEYS
    if unknown:
        raise _fail(source, where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    for key in ("name", "kind", "description", "url", "target", "size", "license"):
        if data.get(key) is None:
            raise _fail(source, where, f"`{key}` is required")
    name = _plain_name(data["name"], source, where, "name")
    target = _plain_name(data["target"], source, where, "target")
    kind = data["kind"]
    if kind not in KINDS:
        raise _fail(source, where, f"`kind` must be one of {', '.join(KINDS)}, got {kind!r}")
    description = data["description"]
    if not isinstance(description, str):
        raise _fail(source, where, f"`description` must be a string, got {description!r}: "
                                   "put it in quotes")
    if "\n" in description.strip():
        raise _fail(source, where, "`description` must be one line of text")
    url = data["url"]
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise _fail(source, where, f"`url` must be an http(s) URL, got {url!r}")
    size = data["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise _fail(source, where, f"`size` must be a positive number of bytes, got {size!r}")
    sha256, pin = data.get("sha256"), data.get("pin")
    if sha256 is None:
        if pin != PIN_FIRST_DOWNLOAD:
            raise _fail(source, where, "`sha256` is missing: give the checksum, or say "
                                       f"`pin: {PIN_FIRST_DOWNLOAD}` to trust and pin the first "
                                       "download explicitly")
    else:
        if not isinstance(sha256, str):
            # Unquoted, YAML reads all-digit checksums as numbers (`000...` becomes 0).
            raise _fail(source, where, f"`sha256` must be a quoted string of 64 hex digits, got "
                                       f"the {type(sha256).__name__} {sha256!r}: put the "
                                       "checksum in quotes")
        if not _SHA256.match(sha256.lower()):
            raise _fail(source, where, f"`sha256` must be 64 hex digits, got {sha256!r}")
        if pin is not None:
            raise _fail(source, where, "`pin` is only for entries without a sha256")
        sha256 = sha256.lower()
    lic = data["license"]
    if lic not in licenses:
        raise _fail(source, where, f"`license` {lic!r} is not in `licenses` "
                                   f"({', '.join(licenses) or 'none defined'})")
    archive = data.get("archive")
    if archive is not None and archive not in ARCHIVES:
        raise _fail(source, where, f"`archive` must be one of {', '.join(ARCHIVES)}, "
                                   f"got {archive!r}")
    memory = data.get("memory")
    if memory is not None and (not isinstance(memory, int) or isinstance(memory, bool)
                               or memory <= 0):
        raise _fail(source, where, f"`memory` must be a positive number of bytes, got "
                                   f"{memory!r}")
    return CatalogEntry(name=name, kind=kind, description=description.strip(), url=url,
                        target=target, size=size, sha256=sha256, license=licenses[lic],
                        archive=archive, memory=memory)


def parse_catalog(text: str, source: str) -> Catalog:
    """Validate catalog YAML; every error names the source and the entry."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise _fail(source, line, f"invalid YAML: {getattr(exc, 'problem', None) or exc}") \
            from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise _fail(source, "", "expected a mapping with a `models:` list")
    if data.get("version", 1) != 1:
        raise _fail(source, "", f"unsupported catalog version {data.get('version')!r}")
    raw_licenses = data.get("licenses") or {}
    if not isinstance(raw_licenses, dict):
        raise _fail(source, "", "`licenses` must be a mapping")
    licenses = {str(k): _parse_license(str(k), v, source) for k, v in raw_licenses.items()}
    entries = [_parse_entry(i, e, licenses, source) for i, e in enumerate(data["models"])]
    seen: dict[tuple[str, str], str] = {}
    for entry in entries:
        for key, value in (("name", entry.name), ("target", entry.target)):
            if (key, value) in seen:
                raise _fail(source, f"model `{entry.name}`: ", f"duplicate {key} {value!r}")
            seen[(key, value)] = entry.name
    return Catalog(source=source, entries=tuple(entries), licenses=licenses)


def load_catalog(source: str | Path | None = None) -> Catalog:
    """The bundled catalog (``None``), a local file, or an http(s) URL (fetched on request)."""
    if source is None:
        path = bundled_catalog_path()
        return parse_catalog(path.read_text(encoding="utf-8"), BUNDLED)
    text_source = str(source)
    if text_source.startswith(("http://", "https://")):
        from edgevoice.modelstore.http import fetch_small

        body = fetch_small(text_source, MAX_REMOTE_CATALOG, what="catalog")
        try:
            return parse_catalog(body.decode("utf-8"), text_source)
        except UnicodeDecodeError:
            raise _fail(text_source, "", "is not UTF-8 text") from None
    path = Path(text_source).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"catalog file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from None
    return parse_catalog(text, str(path))
