"""Config names a model by path or by catalog name; this turns either into a path.

Used at run time (`run`, `ask`, `transcribe`), so it never downloads: a catalog model that is
not installed resolves to where `pull` would put it, and ``pull_hint`` says which command to
type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgevoice.config import Paths
from edgevoice.errors import ModelError
from edgevoice.modelstore.catalog import Catalog, CatalogEntry, load_catalog
from edgevoice.modelstore.store import ModelStore

_BUNDLED: Optional[Catalog] = None
_KIND_NAMES = {"llm": "a language model (llm)", "asr": "a speech recognition model (asr)",
               "tts": "a speech synthesis model (tts)"}


def bundled_catalog() -> Catalog:
    """The packaged catalog, parsed once per process."""
    global _BUNDLED
    if _BUNDLED is None:
        _BUNDLED = load_catalog(None)
    return _BUNDLED


def _is_bare_name(text: str) -> bool:
    return "/" not in text and "\\" not in text and not text.startswith("~")


def catalog_entry_for(name_or_path: str, paths: Paths,
                      catalog: Optional[Catalog] = None) -> Optional[CatalogEntry]:
    """The catalog entry a config value means: its name, or its place in the models dir."""
    catalog = catalog or bundled_catalog()
    if _is_bare_name(name_or_path) and (entry := catalog.get(name_or_path)):
        return entry
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and _is_bare_name(name_or_path):
        path = paths.models / path
    for entry in catalog.entries:
        if path == paths.models / entry.target:
            return entry
    return None


def resolve_model(name_or_path: str, kind: str, paths: Paths,
                  catalog: Optional[Catalog] = None) -> Path:
    """Where the model is, or would be once pulled (the caller checks that it exists).

    In order: an existing path as given; a model `pull` installed under that name (any
    catalog); a catalog name (bundled catalog) -> its place in the models dir; a bare name ->
    the models dir; anything else as given. A catalog name of the wrong kind is a ModelError.
    """
    raw = Path(name_or_path).expanduser()
    if raw.exists():
        return raw
    if _is_bare_name(name_or_path):
        store = ModelStore(paths.models)
        manifest = store.manifest(name_or_path)
        entry = (catalog or bundled_catalog()).get(name_or_path)
        found_kind = manifest.kind if manifest else entry.kind if entry else None
        if found_kind is not None and found_kind != kind:
            raise ModelError(f"`{name_or_path}` is {_KIND_NAMES.get(found_kind, found_kind)}, "
                             f"not {_KIND_NAMES.get(kind, kind)}: pick one of kind {kind} from "
                             "`edgevoice models list`")
        if manifest is not None:
            return paths.models / manifest.target
        if entry is not None:
            return paths.models / entry.target
        return paths.models / raw
    if not raw.is_absolute() and (paths.models / raw).exists():
        return paths.models / raw
    return raw


def pull_hint(name_or_path: str, paths: Paths, catalog: Optional[Catalog] = None) -> Optional[str]:
    """``run `edgevoice models pull NAME``` when the missing model is a catalog model."""
    entry = catalog_entry_for(name_or_path, paths, catalog)
    if entry is None:
        return None
    return f"run `edgevoice models pull {entry.name}` to download it"


_WHAT = {"llm": "the path of a .gguf file", "asr": "the path of a vosk model folder",
         "tts": "the path of a voice model"}


def check_model_setting(key: str, value: str, kind: str, paths: Paths,
                        catalog: Optional[Catalog] = None) -> Optional[tuple[str, str]]:
    """What `config check` says about a model setting such as ``llm.model``: None when the
    model is there; ``("warning", text)`` for a catalog model not downloaded yet (a valid
    setting: `run` starts without it and says which pull to type); ``("error", text)`` when
    the value is neither an existing file nor a catalog name, or names a model of another
    kind."""
    catalog = catalog or bundled_catalog()
    try:
        path = resolve_model(value, kind, paths, catalog)
    except ModelError as exc:
        return "error", f"`{key}`: {exc}"
    if path.exists():
        return None
    entry = catalog_entry_for(value, paths, catalog)
    if entry is not None and entry.kind == kind:
        return "warning", (f"`{key}` names the catalog model {entry.name}, which is not "
                           f"downloaded yet: run `edgevoice models pull {entry.name}`")
    if _is_bare_name(value):
        import difflib

        names = [e.name for e in catalog.entries if e.kind == kind]
        close = difflib.get_close_matches(value, names, n=1)
        hint = f" — did you mean `{close[0]}`?" if close else ""
        return "error", (f"`{key}` = {value!r} is neither a model in the catalog nor a file in "
                         f"{paths.models}{hint}: pick a name from `edgevoice models list` (and "
                         f"get it with `edgevoice models pull NAME`) or give {_WHAT[kind]}")
    return "error", (f"`{key}`: {path} does not exist: give {_WHAT[kind]} that exists, or a "
                     "catalog name from `edgevoice models list` (`edgevoice models pull NAME` "
                     "downloads it)")
