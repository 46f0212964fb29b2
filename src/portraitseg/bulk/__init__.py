"""Bulk inference on a Ray cluster (``pip install 'portraitseg[ray]'``): ``portraitseg bulk``
and its Python API.

```python
from portraitseg import bulk

ds = bulk.segment(["a.jpg", "b.jpg"])              # lazy Ray Dataset: path, mask, error, worker
ds = bulk.segment(ray.data.read_binary_files("s3://bucket/photos", include_paths=True),
                  kinds=("mask", "cutout"), encoded=True)   # PNG bytes, ready to write anywhere
summary = bulk.run(bulk.FileJob(["photos/"], Path("out")), bulk.BulkSettings())   # = the CLI
```

Modules: :mod:`.settings` (what is computed, with how much of the cluster), :mod:`.stages`
(the Ray-free stage functions and the segmenting actor), :mod:`.plan` (the driver's naming
checks and resume journal), :mod:`.runner` (the Ray Data pipeline). Importing this package does
not import Ray; the functions that need it do, with a one-line error when it is missing.
"""

from __future__ import annotations

from .runner import BulkSummary, FileJob, connect, run, segment
from .settings import BulkSettings, Resources

__all__ = ["BulkSettings", "BulkSummary", "FileJob", "Resources", "connect", "run", "segment"]
