"""Reading and writing trajectories as JSON Lines, one trajectory per line.

Reading is strict by default: the first bad record raises a :class:`TrajectoryError` naming
``file:line`` and the field. With ``rejects=...`` bad records are appended to a reject file instead
(``{"line": n, "error": "...", "raw": "..."}``) and reading carries on with the next line.

Writing is atomic: a temp file in the same folder is filled, then moved over the target with
:func:`os.replace`, so a crash or a bad record never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from procsup.data.trajectory import Trajectory, TrajectoryError

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _decode_line(raw: bytes, lineno: int) -> Any:
    """Bytes of one line -> parsed JSON value. Raises :class:`TrajectoryError` (no location yet)."""
    try:
        # A byte-order mark is legal at the start of a UTF-8 file; it is not legal JSON.
        text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise TrajectoryError(f"not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} of the line") from None
    try:
        # Python's JSON accepts NaN/Infinity; they are let through so the validator can name the field.
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TrajectoryError(f"invalid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise TrajectoryError("invalid JSON: nested too deeply") from None


Item = tuple[Any, Callable[[], Any], Callable[[], str]]
"""A record to parse: its location (a line number, an index), a loader of its JSON value (may raise
:class:`TrajectoryError`), and its original text for the reject file."""


def parse_items(
    path: Path, items: Iterable[Item], parse: Callable[[Any], T], *, rejects: str | Path | None, location_key: str
) -> Iterator[T]:
    """Yield ``parse(load())`` for each item. A :class:`TrajectoryError` gets ``file:location`` and is
    raised, or, with ``rejects``, appended there as ``{location_key, "error", "raw"}`` and skipped; then a
    one-line count is logged at the end. The one reading loop behind every reader of procsup."""
    n_good = n_bad = 0
    for location, load, raw in items:
        try:
            item = parse(load())
        except TrajectoryError as e:
            located = e.located(f"{path}:{location}")
            if rejects is None:
                raise located from None
            row = {location_key: location, "error": str(located), "raw": raw()}
            with Path(rejects).open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n_bad += 1
            continue
        n_good += 1
        yield item
    if rejects is not None:
        level = logging.WARNING if n_bad else logging.INFO
        logger.log(level, "%s: kept %d record(s), rejected %d (written to %s)", path, n_good, n_bad, rejects)


def _jsonl_items(f) -> Iterator[Item]:
    for lineno, raw in enumerate(f, start=1):
        if raw.strip():
            yield (lineno, lambda raw=raw, n=lineno: _decode_line(raw, n),
                   lambda raw=raw: raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n"))


def iter_records(
    path: str | Path, parse: Callable[[Any], T], *, rejects: str | Path | None = None
) -> Iterator[T]:
    """Yield ``parse(obj)`` for each JSON object in a JSONL file; blank lines are skipped.

    ``parse`` gets the decoded JSON value and raises :class:`TrajectoryError` if it is not valid;
    this loop adds ``file:line``. Without ``rejects`` the first bad record raises. With it, each bad
    record is appended to ``rejects`` and skipped, and a one-line count is logged at the end.
    """
    path = Path(path)
    with path.open("rb") as f:
        yield from parse_items(path, _jsonl_items(f), parse, rejects=rejects, location_key="line")


def iter_jsonl(path: str | Path, *, rejects: str | Path | None = None) -> Iterator[Trajectory]:
    """Stream the trajectories of a JSONL file; see :func:`iter_records` for errors and ``rejects``."""
    return iter_records(path, Trajectory.from_dict, rejects=rejects)


def read_jsonl(path: str | Path, *, rejects: str | Path | None = None) -> list[Trajectory]:
    """All trajectories of a JSONL file; see :func:`iter_records` for errors and ``rejects``."""
    return list(iter_jsonl(path, rejects=rejects))


def write_records(records: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Atomically write JSON objects as JSONL (UTF-8, standard JSON: no NaN/Infinity).

    Raises :class:`TrajectoryError` located at the line the bad record would have taken; the
    target is then left exactly as it was (or not created).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # same folder: os.replace is atomic
    try:
        # os.open with 0o666 honours the umask, unlike tempfile.mkstemp's fixed 0o600.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            for i, record in enumerate(records):
                f.write(_encode_record(record, i, path))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _encode_record(record: dict[str, Any], index: int, path: Path) -> bytes:
    try:
        return (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as e:  # ValueError covers NaN and lone surrogates
        raise TrajectoryError(f"record {index} cannot be written as JSON: {e}", where=f"{path}:{index + 1}") from None


def write_jsonl(trajectories: Iterable[Trajectory], path: str | Path) -> None:
    """Atomically write trajectories as JSONL, one :meth:`Trajectory.to_dict` per line."""
    write_records((t.to_dict() for t in trajectories), path)
