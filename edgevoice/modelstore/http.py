"""HTTP for the model store: stdlib only, tokens only where they belong, errors that say what
to do.

``HF_TOKEN`` is sent as a Bearer token to huggingface.co over https only, and as an
*unredirected* header, so it never follows Hugging Face's redirect to its CDN (or anywhere
else). Proxies from the environment (``https_proxy`` ...) are honoured by urllib.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Optional
from urllib.parse import urlsplit

from edgevoice import __version__
from edgevoice.modelstore.errors import DownloadError

HF_HOSTS = ("huggingface.co", "hf.co")
TOKEN_ENV = "HF_TOKEN"
USER_AGENT = f"edgevoice/{__version__} (model store; python urllib)"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpStatusError(DownloadError):
    """A final HTTP status that retrying will not fix, with the fix in the message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def is_hf_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in HF_HOSTS)


def hf_token() -> Optional[str]:
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def build_request(url: str, headers: Optional[dict[str, str]] = None) -> urllib.request.Request:
    """A GET with our User-Agent, extra headers, and ``HF_TOKEN`` where it belongs."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    token = hf_token()
    if token and is_hf_url(url) and urlsplit(url).scheme == "https":
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    return req


def status_message(url: str, status: int, reason: str, name: str) -> str:
    """What a failed status means for a model download, naming the token to set."""
    host = urlsplit(url).hostname or url
    if status in (401, 403):
        if is_hf_url(url):
            repo = "/".join(urlsplit(url).path.strip("/").split("/")[:2])
            page = f"https://huggingface.co/{repo}" if repo else "the model page"
            if hf_token():
                return (f"{name}: {host} refused the download (HTTP {status} {reason}) although "
                        f"{TOKEN_ENV} is set: check that the token is valid and that its account "
                        f"has accepted the model's licence at {page}")
            return (f"{name}: {host} refused the download (HTTP {status} {reason}): the "
                    f"repository is gated — accept its licence at {page} with a Hugging Face "
                    f"account, create a read token, and set {TOKEN_ENV}=hf_... before "
                    f"`edgevoice models pull`")
        return (f"{name}: {host} refused the download (HTTP {status} {reason}); this server "
                f"wants credentials edgevoice does not have ({TOKEN_ENV} is only sent to "
                f"huggingface.co): use a catalog entry with a public URL")
    if status == 404:
        return (f"{name}: not found at {url} (HTTP 404): the catalog entry is out of date; "
                f"try a newer catalog with --catalog FILE|URL")
    if status == 416:
        return f"{name}: {host} rejected the resume request (HTTP 416)"
    return f"{name}: {host} answered HTTP {status} {reason} for {url}"


def open_url(url: str, *, name: str, headers: Optional[dict[str, str]] = None,
             timeout: float = 30.0):
    """urlopen that turns HTTP errors into ``HttpStatusError`` (``status`` kept for retries).

    Network-level failures (``URLError``, ``OSError``) propagate: the caller decides whether to
    retry them.
    """
    try:
        return urllib.request.urlopen(build_request(url, headers), timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        exc.close()
        raise HttpStatusError(status_message(url, exc.code, exc.reason or "", name),
                              exc.code) from None


def network_message(url: str, exc: BaseException, name: str) -> str:
    host = urlsplit(url).hostname or url
    reason = getattr(exc, "reason", None) or exc
    return (f"{name}: cannot download from {host} ({reason}); `edgevoice models pull` needs the "
            f"network, nothing else in edgevoice does")


def fetch_small(url: str, limit: int, *, what: str, timeout: float = 30.0) -> bytes:
    """A whole small body (a catalog), refusing anything larger than ``limit`` bytes."""
    try:
        with open_url(url, name=what, timeout=timeout) as resp:
            body = resp.read(limit + 1)
    except HttpStatusError:
        raise
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(network_message(url, exc, what)) from None
    if len(body) > limit:
        raise DownloadError(f"{what} at {url} is larger than {limit} bytes: refused")
    return body
