"""One benchmark run, computed once: a finished run with the same settings is read back, not re-trained.

The cache key is the run's settings. The code that produced a run is recorded beside it, not in the key
(a key change would throw away hours of recorded runs at every edit): ``code`` holds the procsup version
and a hash of the package's source. A run is reused when its key matches and its recorded version equals
the installed one (bump the version to invalidate every cached run); a run recorded before versions were
kept has none and is reused. A differing source hash is reported (``cached_from_other_source``), not acted
on. A reused run carries ``cached: True`` in the returned dict (never written to disk)."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from procsup.data.io import write_json
from procsup.trainers.loop import acquire_lock, release_lock


@functools.cache
def code_version() -> dict:
    """``{"version": <procsup version>, "source": <sha256 of every .py file of the package, 12 hex>}``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("procsup")
    except PackageNotFoundError:
        v = "unknown"
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return {"version": v, "source": digest.hexdigest()[:12]}


def cached_run(run_dir: Path, key: dict, fn: Callable[[Path], dict]) -> dict:
    """``fn(run_dir)`` once per ``key``: a finished run whose ``eval.json`` holds the same key (and the same
    procsup version, when recorded) is read back with ``cached: True``; a stale or unfinished folder is
    cleared first (a checkpoint of other settings must not be resumed). The result, with ``key``, ``code``
    and ``seconds``, is written atomically to ``run_dir/eval.json``."""
    done = run_dir / "eval.json"
    key = json.loads(json.dumps(key))  # tuples -> lists, as read back from disk
    code = code_version()
    # Two bench calls on one output_dir (a lane and the final call) must not both build this run: the second
    # would clear a folder the first is training in, or evaluating after its trainer let go of its own lock.
    # A lock file beside the run (the trainer's lock code: a dead holder's lock is taken over) is held for the
    # whole of fn, so the second call stops with a one-line error naming the holder; released, it is gone.
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(run_dir.parent / f".claim-{run_dir.name}.lock", f"bench run claim for {run_dir}")
    try:
        if done.is_file():
            cached = json.loads(done.read_text())
            recorded = cached.get("code", {}).get("version")
            if cached.get("key") == key and recorded in (None, code["version"]):
                other = cached.get("code", {}).get("source") not in (None, code["source"])
                return {**cached, "cached": True, "cached_from_other_source": other}
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        t0 = time.perf_counter()
        out = {"key": key, **fn(run_dir), "code": code, "seconds": time.perf_counter() - t0}
        write_json(done, out)
        return out
    finally:
        release_lock(lock)
