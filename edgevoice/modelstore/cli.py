"""`edgevoice models ...`: list, pull, verify, rm, path. Parse -> store -> print.

Human output goes to stdout for `list`/`verify`/`path`, progress and notices to stderr; `list
--json` prints one JSON document. Handlers return exit codes: 0 fine, 1 an operation failed
(download, checksum, verify), 2 a user mistake (unknown name, licence not accepted ...).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from edgevoice.errors import UserError


def _context(args):
    """The catalog and the models dir, with --catalog / --models-dir applied."""
    from edgevoice.modelstore.catalog import load_catalog
    from edgevoice.modelstore.store import ModelStore

    models_dir = getattr(args, "models_dir", None)
    if models_dir:
        root = Path(models_dir).expanduser()
    else:
        from edgevoice.config import Paths, load_config

        cfg, _ = load_config(getattr(args, "config", None))
        root = Paths.from_config(cfg).models
    return load_catalog(getattr(args, "catalog", None)), ModelStore(root)


def _disk_bytes(path: Path) -> Optional[int]:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return None


def _rows(catalog, store) -> list[dict]:
    from edgevoice.modelstore.licenses import accepted

    rows = []
    pins = store.pins()
    for entry in catalog.entries:
        status = store.status(entry)
        path = store.path_for(entry)
        part = store.part_path(entry.name)
        rows.append({
            "name": entry.name, "kind": entry.kind, "description": entry.description,
            "url": entry.url, "target": entry.target, "archive": entry.archive,
            "size": entry.size, "size_exact": entry.size_exact, "sha256": entry.sha256,
            "memory": entry.memory, "default": entry.is_default,
            "pinned_sha256": (pins.get(entry.url) or {}).get("sha256"),
            "license": {"id": entry.license.id, "title": entry.license.title,
                        "url": entry.license.url, "accept_required": entry.license.accept,
                        "accepted": bool(entry.license.accept
                                         and accepted(store, entry.license))},
            "status": status, "installed": status != "missing",
            "path": str(path),
            "installed_bytes": _disk_bytes(path) if status != "missing" else None,
            "partial_bytes": part.stat().st_size if part.is_file() else None,
            "in_catalog": True,
        })
    known = {e.name for e in catalog.entries}
    for manifest in store.manifests():
        if manifest.name in known:
            continue
        path = store.root / manifest.target
        rows.append({
            "name": manifest.name, "kind": manifest.kind, "description": "", "url": manifest.url,
            "target": manifest.target, "archive": manifest.archive, "size": manifest.size,
            "size_exact": True, "sha256": manifest.sha256, "pinned_sha256": None,
            "memory": None, "default": False,
            "license": None, "status": "installed" if path.exists() else "missing",
            "installed": path.exists(), "path": str(path),
            "installed_bytes": _disk_bytes(path), "partial_bytes": None, "in_catalog": False,
        })
    return rows


def cmd_models_list(args) -> int:
    from edgevoice.modelstore.fsutil import human_size

    catalog, store = _context(args)
    rows = _rows(catalog, store)
    if args.json:
        print(json.dumps({"models_dir": str(store.root), "catalog": catalog.source,
                          "models": rows}, ensure_ascii=False), flush=True)
        return 0
    width = max([len(r["name"]) + (2 if r["default"] else 0) for r in rows] + [4])
    print(f"{'NAME':<{width}}  KIND  {'SIZE':>9}  {'MEMORY':>8}  {'STATUS':<9}  DESCRIPTION")
    for r in rows:
        size = r["installed_bytes"] if r["installed_bytes"] is not None else r["size"]
        approx = "" if r["installed_bytes"] is not None or r["size_exact"] else "~"
        memory = human_size(r["memory"]) if r["memory"] else "-"
        status = r["status"]
        if r["partial_bytes"] and status == "missing":
            status = "partial"
        note = r["description"] or "(installed; not in this catalog)"
        if r["license"] and r["license"]["accept_required"] and not r["license"]["accepted"]:
            note += f" [{r['license']['title']}: accept once]"
        name = r["name"] + (" *" if r["default"] else "")
        print(f"{name:<{width}}  {r['kind']:<4}  {approx + human_size(size):>9}  {memory:>8}  "
              f"{status:<9}  {note}")
    print(f"\nmodels dir: {store.root}\ncatalog: {catalog.source}\n"
          "* = the default language model (`llm.model: null`); SIZE = download, MEMORY = RAM "
          "to run it\n"
          "get one: edgevoice models pull NAME   (`installed` = by pull, `present` = put there "
          "by hand, `partial` = a download to resume)")
    return 0


def cmd_models_pull(args) -> int:
    from edgevoice.modelstore.install import pull
    from edgevoice.modelstore.licenses import ensure_accepted
    from edgevoice.modelstore.progress import say

    catalog, store = _context(args)
    entries = [catalog.require(name) for name in dict.fromkeys(args.names)]
    ensure_accepted(entries, store, accept_flag=args.accept_license)
    for entry in entries:
        try:
            result = pull(entry, store, force=args.force)
        except KeyboardInterrupt:
            say(f"{entry.name}: interrupted; run the same command again to resume the download")
            raise
        if result.action == "already-installed":
            say(f"{entry.name}: already installed at {result.path} "
                f"(`edgevoice models verify {entry.name}` re-checks it; --force re-downloads)")
        elif result.action == "adopted":
            say(f"{entry.name}: already at {result.path} and it matches the expected sha256")
    return 0


def _installed_names(catalog, store) -> list[str]:
    names = [m.name for m in store.manifests()]
    names += [e.name for e in catalog.entries
              if e.name not in names and store.status(e) == "present"]
    return names


def cmd_models_verify(args) -> int:
    catalog, store = _context(args)
    names = [args.name] if args.name else _installed_names(catalog, store)
    if not names:
        print(f"no models installed in {store.root}")
        return 0
    failed = 0
    for name in names:
        verdict = store.verify(name, catalog.get(name))
        failed += not verdict.ok
        print(f"{name}: {verdict.status.upper()}  {verdict.path}  {verdict.detail}", flush=True)
    return 1 if failed else 0


def cmd_models_rm(args) -> int:
    catalog, store = _context(args)
    with store.lock(args.name):
        path = store.remove(args.name, catalog.get(args.name))
    print(f"removed {args.name} ({path})")
    return 0


def cmd_models_path(args) -> int:
    catalog, store = _context(args)
    path = store.installed_path(args.name)
    entry = catalog.get(args.name)
    if path is None and entry is not None and store.path_for(entry).exists():
        path = store.path_for(entry)
    if path is None:
        if entry is None and store.manifest(args.name) is None:
            catalog.require(args.name)  # raises with the list of known names
        raise UserError(f"model {args.name} is not installed in {store.root}; run "
                        f"`edgevoice models pull {args.name}`")
    print(path)
    return 0


def add_models_parser(sub, common: argparse.ArgumentParser) -> None:
    """Register `edgevoice models ACTION` on the main parser's subparsers."""
    opts = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: accepted before and after the action without one overwriting the other.
    opts.add_argument("--catalog", metavar="FILE|URL", default=argparse.SUPPRESS,
                      help="model catalog to use (default: the one shipped with edgevoice)")
    opts.add_argument("--models-dir", metavar="DIR", default=argparse.SUPPRESS,
                      help="models directory (default: `paths.models_dir`, "
                           "$EDGEVOICE_MODELS_DIR, or the per-user data dir)")
    parents = [common, opts]
    p = sub.add_parser("models", parents=parents, help="list, download, check and remove models",
                       description="Models live in one directory; nothing is downloaded unless "
                                   "you run `pull`.")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    a = msub.add_parser("list", parents=parents, help="the catalog and what is installed")
    a.add_argument("--json", action="store_true", help="one JSON document")
    a.set_defaults(func=cmd_models_list)

    a = msub.add_parser("pull", parents=parents, help="download, verify and install models")
    a.add_argument("names", nargs="+", metavar="NAME", help="catalog names (`models list`)")
    a.add_argument("--accept-license", action="store_true",
                   help="accept the model's licence terms (e.g. the Gemma Terms of Use) without "
                        "asking; needed when not interactive")
    a.add_argument("--force", action="store_true", help="download and install again")
    a.set_defaults(func=cmd_models_pull)

    a = msub.add_parser("verify", parents=parents,
                        help="re-check installed models' sha256 (exit 1 if any fails)")
    a.add_argument("name", nargs="?", metavar="NAME", help="one model (default: all installed)")
    a.set_defaults(func=cmd_models_verify)

    a = msub.add_parser("rm", parents=parents, help="delete an installed model")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=cmd_models_rm)

    a = msub.add_parser("path", parents=parents, help="print where an installed model is")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=cmd_models_path)


__all__ = ["add_models_parser"]
