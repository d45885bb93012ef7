"""One benchmark run, computed once: a finished run with the same settings is read back, not re-trained."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable


def cached_run(run_dir: Path, key: dict, fn: Callable[[Path], dict]) -> dict:
    """``fn(run_dir)`` once per ``key``: a finished run whose ``eval.json`` holds the same key is read
    back; a stale or unfinished folder is cleared first (a checkpoint of other settings must not be
    resumed). The result, with ``key`` and ``seconds``, is written atomically to ``run_dir/eval.json``."""
    done = run_dir / "eval.json"
    key = json.loads(json.dumps(key))  # tuples -> lists, as read back from disk
    if done.is_file():
        cached = json.loads(done.read_text())
        if cached.get("key") == key:
            return cached
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    out = {"key": key, **fn(run_dir), "seconds": time.perf_counter() - t0}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(done)
    return out
