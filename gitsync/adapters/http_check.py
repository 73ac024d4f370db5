"""``ports.HttpProbe``: one GET per HTTP analysis check, with the standard library only.

Any response is returned as (status, body), error statuses included, because a 500 from the new version is
exactly the evidence an analysis needs. Only the absence of a response (refused, timeout, DNS) raises
``TransientError``, which the analysis counts as a provider error, not as a failure of the release.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from gitsync.errors import TransientError

__all__ = ["HttpClient", "checked_url"]

_MAX_BODY = 1 << 20


def checked_url(url: str, what: str = "URL") -> None:
    """Raise ``TransientError`` unless ``url`` is http(s) without ``user:password@``: urllib cannot send those
    credentials, and every error message names the URL, which ends in analysis evidence, Events and history."""
    scheme, netloc, *rest = urllib.parse.urlsplit(url)
    if "@" in netloc:
        shown = urllib.parse.urlunsplit((scheme, "***@" + netloc.rpartition("@")[2], *rest))
        raise TransientError(f"{shown}: credentials in a {what} are not supported")
    if scheme not in ("http", "https"):
        raise TransientError(f"{url}: not an http(s) {what}")


class HttpClient:
    def get(self, url: str, timeout: float) -> tuple[int, bytes]:
        checked_url(url)
        headers = {"Accept": "application/json", "User-Agent": "gitsync/analysis"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked above)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
                return int(resp.status), resp.read(_MAX_BODY)
        except urllib.error.HTTPError as e:
            return int(e.code), e.read(_MAX_BODY)
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise TransientError(f"{url}: {e}") from e
