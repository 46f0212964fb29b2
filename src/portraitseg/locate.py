"""Where the source checkout is, for files that live beside the package rather than inside it
(the web app in ``web/``, the peer models in ``../shared/anchors``). Stdlib only."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse


def installed_from() -> Path | None:
    """The local folder ``pip install`` was run from (PEP 610 ``direct_url.json``), if any."""
    try:
        text = metadata.distribution("portraitseg").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    url = urlparse(json.loads(text).get("url", ""))
    return Path(unquote(url.path)) if url.scheme == "file" else None


def source_roots() -> list[Path]:
    """Checkout folders to look beside, in order: the one this file sits in (``<repo>/src/
    portraitseg/locate.py``: a checkout or editable install), then the folder a non-editable
    ``pip install .`` was run from."""
    here = Path(__file__).resolve()
    roots = [here.parents[2]] if here.parents[1].name == "src" else []
    source = installed_from()
    if source is not None:
        roots.append(source)
    return list(dict.fromkeys(roots))
