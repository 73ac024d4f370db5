"""``ports.WebhookPoster``: one POST of a notification with the standard library, redirects refused.

Any HTTP status is returned (the sender decides what to retry). Only the absence of an answer raises
``TransientError``, whose message names the failure but never the URL: a Slack incoming-webhook URL is itself the
credential, and these messages reach the log.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from gitsync.errors import TransientError

__all__ = ["WebhookPost"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is the receiver's answer: following it would re-send (or drop) the signed body to another place."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookPost:
    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirect())

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, str]:
        if not url.startswith(("http://", "https://")):
            raise TransientError("notification URL is not http(s)")
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
        try:
            with self._opener.open(request, timeout=timeout) as resp:
                resp.read(1 << 16)
                return int(resp.status), resp.headers.get("Retry-After", "")
        except urllib.error.HTTPError as e:
            with e:
                return int(e.code), (e.headers.get("Retry-After", "") if e.headers is not None else "")
        except urllib.error.URLError as e:
            raise TransientError(f"no answer: {_reason(e.reason)}") from None
        except (OSError, http.client.HTTPException) as e:
            raise TransientError(f"no answer: {_reason(e)}") from None


def _reason(e: object) -> str:
    """The failure without any address (never ``str(e)``, which may quote the URL): ``Connection refused``,
    ``timed out``, or the exception's type."""
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return type(e).__name__
