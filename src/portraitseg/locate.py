"""Where the source checkout is, for files that live beside the package rather than inside it
(the web app in ``web/``, the peer models in ``../shared/anchors``), and so which ``pip install``
adds an extra to THIS installation (:func:`install_hint`). Stdlib only, and cheap to import (the
CLI imports it for its one-line errors; ``portraitseg --help`` must stay fast)."""

from __future__ import annotations

from pathlib import Path


def installed_from() -> Path | None:
    """The local folder ``pip install`` was run from (PEP 610 ``direct_url.json``), if any."""
    import json
    from importlib import metadata
    from urllib.parse import unquote, urlparse

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


def install_hint(extra: str) -> str:
    """The pip command that adds ``extra`` to THIS installation: from the clone it runs from
    (editable) or was installed from (``pip install .``), from the wheel file it came from, else
    from the index. ``pip install 'portraitseg[x]'`` alone would fetch another copy (or nothing)
    for a user who installed from a clone. Every missing-extra message uses it (the CLI's
    :func:`portraitseg.cli.missing_extra`, the runtimes, export, bench, bulk)."""
    return hint_for(extra, Path(__file__).resolve(), installed_from())


def hint_for(extra: str, module_file: Path, source: Path | None) -> str:
    """:func:`install_hint` for a package with a module at ``module_file`` (a file directly in
    the package) that pip installed from ``source`` (PEP 610; None: from an index)."""
    import shlex

    checkout = module_file.parents[2] if module_file.parents[1].name == "src" else None
    if checkout is not None and (checkout / "pyproject.toml").is_file():
        return f"cd {shlex.quote(str(checkout))} && pip install -e '.[{extra}]'"
    if source is not None and (source / "pyproject.toml").is_file():
        return f"cd {shlex.quote(str(source))} && pip install '.[{extra}]'"
    if source is not None and source.suffix == ".whl" and source.is_file():
        return f"pip install {shlex.quote(f'{source}[{extra}]')}"
    return f"pip install 'portraitseg[{extra}]'"
