"""What the backend clients share: the timeout, the error, and a JSON GET."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..errors import GlmtraceError

TIMEOUT = 10.0


class RemoteError(GlmtraceError):
    """A backend could not be reached or did not answer as expected."""


def get_json(url: str, what: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:
        with err:
            body = err.read()[:300].decode(errors="replace")
        if err.code == 404:
            return None
        raise RemoteError(f"{what} answered HTTP {err.code}: {body}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RemoteError(f"{what} did not answer: {reason(exc)}") from None


def reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
