"""A small JSON-over-HTTP helper on urllib (no extra dependency)."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from trex.llm.types import BackendError, LLMTimeout


def post_json(url: str, body: dict[str, Any], *, timeout: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    return _send(req, timeout)


def get_json(url: str, *, timeout: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return _send(urllib.request.Request(url, headers=headers or {}), timeout)


def _send(req: urllib.request.Request, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:2000].decode("utf-8", "replace")
        raise BackendError(f"HTTP {e.code} from {req.full_url}: {detail}") from None
    except (socket.timeout, TimeoutError) as e:
        raise LLMTimeout(f"no answer from {req.full_url} within {timeout:.0f}s") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise LLMTimeout(f"no answer from {req.full_url} within {timeout:.0f}s") from e
        raise BackendError(f"cannot reach {req.full_url}: {e.reason}") from None
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {"text": raw.decode("utf-8", "replace")}
