"""Assembling the report: the page template with style, scripts and data inline.

The data is JSON inside `<script type="application/json">`, which the browser never executes
but whose end it finds by the first `</script`: so every `<`, `>` and `&` in the JSON is
written as a `\\u` escape (valid JSON, the same string once parsed), and no label, name,
message or file name can end the element or open a comment. Static assets are checked for
the same sequences when the page is assembled. The page's Content-Security-Policy lists the
two scripts by hash, so a script that got in by any other way would not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from functools import cache
from importlib.resources import files

from netfence.report.model import Json

_ASSETS = files("netfence.report") / "assets"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class AssetError(RuntimeError):
    """A bundled asset cannot be inlined safely (a broken refresh of the vendored library)."""


@cache
def _asset(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")


@cache
def library() -> Json:
    """The vendored graph library's pin (`assets/vendor.json`)."""
    pin: Json = json.loads(_asset("vendor.json"))
    return pin


def _inline(name: str, tag: str) -> str:
    text = _asset(name)
    lowered = text.lower()
    for bad in (f"</{tag}", "<!--"):
        if bad in lowered:
            raise AssetError(f"asset {name} contains {bad!r} and cannot be inlined in <{tag}>")
    return text


def script_json(data: object) -> str:
    """JSON that is safe inside a `<script>` element, whatever its strings hold."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.translate(_JSON_ESCAPES)


def _csp_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def render_html(data: Json) -> str:
    """The whole report page for `report_data`'s output."""
    pin = library()
    data = {
        **data,
        "library": {k: pin[k] for k in ("package", "version", "license")}
        | {"name": "Cytoscape.js"},
    }
    scripts = {
        "library": _inline(str(pin["file"]), "script"),
        "app": _inline("report.js", "script"),
    }
    meta = data["meta"]
    assert isinstance(meta, dict)
    parts = {
        "title": html.escape(f"netfence report: {meta['source']}"),
        "style": _inline("report.css", "style"),
        "data": script_json(data),
        "csp": " ".join(_csp_hash(s) for s in scripts.values()),
        **scripts,
    }
    template = _asset("report.html")
    found = _PLACEHOLDER.findall(template)
    if sorted(found) != sorted(parts):
        raise AssetError(f"report.html placeholders {sorted(found)} != {sorted(parts)}")
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], template)
