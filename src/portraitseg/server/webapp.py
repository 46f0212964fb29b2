"""Finding the web app and its onnxruntime-web runtime, and saying how to fix it when either
is missing (no fastapi here: ``serve`` calls these before building the app).

The web app (``web/`` in the repository) is not inside the Python package, so ``serve`` looks
for it from where the package came from, not from the current folder:

1. ``--web-dir`` when given;
2. ``web/`` beside ``src/`` of the code being run (a checkout, an editable install, PYTHONPATH);
3. ``web/`` in the folder ``pip install .`` was run from, which pip records in the package's
   ``direct_url.json`` (PEP 610) - the README's install;
4. ``portraitseg/web/`` inside the installed package: a wheel (``python -m build``) carries the
   app there, vendored runtime included (in a checkout it is a link to ``web/``).

The page imports ``vendor/ort.min.mjs`` (onnxruntime-web, ~43 MB of .wasm, gitignored).
``web/build.sh`` vendors it from npm; an ``onnxruntime-web`` npm package already installed
(``node_modules`` beside the repo or npm's global folder) is served instead when ``vendor/`` is
absent. With neither, the page would hang at "loading model…": the server then logs one line
with the fix and the page shows it (:func:`missing_runtime_page`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from .. import locate
from ..locate import source_roots

RUNTIME_ENTRY = "ort.min.mjs"
NPM_PACKAGE = "onnxruntime-web"
GLOBAL_NODE_MODULES = (Path("/usr/local/lib/node_modules"), Path("/usr/lib/node_modules"))


def is_web_app(folder: Path) -> bool:
    return (folder / "index.html").is_file()


def candidate_web_dirs() -> list[Path]:
    """Where the web app may be, in order (see the module docstring)."""
    # Last, the copy inside the package (from the same place locate.source_roots reasons from):
    # a clone's web/ comes first, since web/build.sh vendors the runtime there after install.
    package = Path(locate.__file__).resolve().parent
    return [root / "web" for root in source_roots()] + [package / "web"]


def locate_web_dir(explicit: Path | None = None) -> Path | None:
    """The web app folder: ``explicit`` (must hold index.html) or the first candidate that does."""
    if explicit is not None:
        if not is_web_app(explicit):
            raise ValueError(f"--web-dir {explicit}: no index.html there (the repository's web/ folder)")
        return explicit.resolve()
    return next((d.resolve() for d in candidate_web_dirs() if is_web_app(d)), None)


def locate_runtime(web_dir: Path) -> Path | None:
    """The folder to serve as ``/vendor/``: ``web/vendor`` from ``web/build.sh``, else the
    ``dist/`` of an installed onnxruntime-web npm package; None when there is neither."""
    roots = [web_dir, web_dir.parent, *GLOBAL_NODE_MODULES]
    candidates = [web_dir / "vendor"]
    modules = [r if r.name == "node_modules" else r / "node_modules" for r in roots]
    candidates += [m / NPM_PACKAGE / "dist" for m in modules]
    return next((c for c in candidates if (c / RUNTIME_ENTRY).is_file()), None)


def runtime_fix(web_dir: Path, public: bool = False) -> str:
    """How to install the missing runtime. ``public``: for the page and the stub module that
    any client sees, so paths are given relative to the repository (``web/...``), never the
    server's own folders; the server log gets the absolute paths."""
    web = Path("web") if public else web_dir
    repo = "the repository folder" if public else str(web_dir.parent)
    return (f"onnxruntime-web is missing ({web / 'vendor' / RUNTIME_ENTRY} not found), so the web app "
            f"cannot load its model: run `bash {web / 'build.sh'}` (needs npm), or `npm install "
            f"{NPM_PACKAGE}` in {repo}, then restart serve; the HTTP API works without it")


def missing_runtime_page(index_html: str, message: str) -> str:
    """``index.html`` with the fix shown in place of "loading model…" and as a banner."""
    text = html.escape(message)
    banner = (f'<p id="runtime-missing" role="alert" style="background:#fde8e8;color:#8a1c1c;'
              f'padding:.75em;margin:0">{text}</p>')
    page = index_html.replace("loading model…", "web runtime missing (see below)", 1)
    return page.replace("<body>", "<body>\n" + banner, 1) if "<body>" in page else banner + page


def stub_runtime_module(message: str) -> str:
    """What ``/vendor/ort.min.mjs`` answers when the runtime is missing: a module that puts the
    fix in the status line (and the console) instead of a bare 404 the page cannot explain."""
    msg = json.dumps(message)
    return (f"const msg = {msg};\n"
            "const el = document.getElementById('status'); if (el) el.textContent = msg;\n"
            "console.error(msg);\nthrow new Error(msg);\n")
