"""Licence acceptance: terms such as Gemma's are shown and accepted once, before the first
download, and remembered in the models dir (where the weights live).

Non-interactive runs (scripts, services, CI) must say ``--accept-license``; without it they get
an error that names the terms, never a silent download or a prompt nobody can answer.
"""

from __future__ import annotations

import getpass
import json
import sys
import textwrap
from collections.abc import Callable, Iterable
from typing import Optional

from edgevoice.errors import UserError
from edgevoice.modelstore.catalog import CatalogEntry, License
from edgevoice.modelstore.fsutil import atomic_write_bytes
from edgevoice.modelstore.progress import say
from edgevoice.modelstore.store import ModelStore, now_iso


class LicenseNotAccepted(UserError):
    """Terms that need acceptance were not accepted: nothing was downloaded."""


def _records(store: ModelStore) -> dict:
    try:
        data = json.loads(store.licenses_path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable: ask again rather than assume acceptance


def accepted(store: ModelStore, lic: License) -> Optional[dict]:
    """The acceptance record for these terms (same URL), or None."""
    record = _records(store).get(lic.id)
    return record if isinstance(record, dict) and record.get("url") == lic.url else None


def record_acceptance(store: ModelStore, lic: License, how: str) -> None:
    records = _records(store)
    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid (containers)
        user = None
    records[lic.id] = {"title": lic.title, "url": lic.url, "accepted_at": now_iso(), "how": how,
                       "user": user}
    atomic_write_bytes(store.licenses_path,
                       (json.dumps(records, indent=2, sort_keys=True) + "\n").encode())


def _ask(lic: License, names: list[str], read: Callable[[], str]) -> bool:
    width = 88
    print(file=sys.stderr)
    print(f"{', '.join(names)}: {lic.title}", file=sys.stderr)
    print(textwrap.fill(lic.notice or f"These weights are under the {lic.title} ({lic.url}).",
                        width=width, initial_indent="  ", subsequent_indent="  "),
          file=sys.stderr)
    print(f"  Terms: {lic.url}", file=sys.stderr)
    sys.stderr.write(f"Accept the {lic.title}? Type 'yes' to accept: ")
    sys.stderr.flush()
    try:
        answer = read()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("yes", "y")


def ensure_accepted(entries: Iterable[CatalogEntry], store: ModelStore, *, accept_flag: bool,
                    interactive: Optional[bool] = None,
                    read: Callable[[], str] = lambda: sys.stdin.readline()) -> None:
    """Make sure every licence these entries need is accepted, before any download starts."""
    needing: dict[str, tuple[License, list[str]]] = {}
    for entry in entries:
        if entry.license.accept:
            needing.setdefault(entry.license.id, (entry.license, []))[1].append(entry.name)
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
    for lic, names in needing.values():
        record = accepted(store, lic)
        if record:
            say(f"{', '.join(names)}: {lic.title} ({lic.url}) accepted on "
                f"{record.get('accepted_at', '?')[:10]}")
            continue
        if accept_flag:
            say(f"{', '.join(names)}: {lic.title} ({lic.url}) accepted with --accept-license")
            record_acceptance(store, lic, "--accept-license")
        elif interactive and _ask(lic, names, read):
            record_acceptance(store, lic, "interactive")
        elif interactive:
            raise LicenseNotAccepted(f"the {lic.title} were not accepted: nothing was downloaded")
        else:
            raise LicenseNotAccepted(
                f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} under the {lic.title} "
                f"({lic.url}): read them, then run again with --accept-license to accept them "
                f"(asked once per models dir; this session is not interactive)")
