"""The report page: one self-contained HTML file made with Jinja2.

CSS and JavaScript are template includes, inlined into the page; the data is one
JSON document in a ``<script type="application/json">`` element. Nothing is
fetched from a network when the page is opened.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).resolve().parent / "templates"


def embed_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: ``<`` only occurs in strings,
    where ``\\u003c`` means the same, so no ``</script>`` or ``<!--`` can appear.
    ASCII only: recorded text may hold lone surrogates (bytes that were not UTF-8),
    which only an escape can carry."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c")


def render(data: dict[str, Any]) -> str:
    # Imported here: only `auditwatch report` needs Jinja2.
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    template = env.get_template("report.html.j2")
    return template.render(
        meta=data["meta"],
        data_json=embed_json(data),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
