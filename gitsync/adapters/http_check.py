"""``ports.HttpProbe``: one GET per HTTP analysis check, with the standard library only.

Any response is returned as (status, body), error statuses included, because a 500 from the new version is
exactly the evidence an analysis needs. Only the absence of a response (refused, timeout, DNS) raises
``TransientError``, which the analysis counts as a provider error, not as a failure of the release.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from gitsync.errors import TransientError

__all__ = ["HttpClient"]

_MAX_BODY = 1 << 20


class HttpClient:
    def get(self, url: str, timeout: float) -> tuple[int, bytes]:
        if not url.startswith(("http://", "https://")):
            raise TransientError(f"{url}: not an http(s) URL")
        headers = {"Accept": "application/json", "User-Agent": "gitsync/analysis"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked above)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
                return int(resp.status), resp.read(_MAX_BODY)
        except urllib.error.HTTPError as e:
            return int(e.code), e.read(_MAX_BODY)
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise TransientError(f"{url}: {e}") from e
