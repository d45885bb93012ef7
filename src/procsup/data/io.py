"""Reading and writing trajectories as JSON Lines, one trajectory per line.

Every path is checked at the door (:func:`check_paths`): an input must be a readable file, an output
must not be a folder, and no output (the written file, the reject file) may be an input or another
output, compared as resolved paths and, when both exist, as the same file on disk (symlinks, hard links).
A path that fails raises :class:`PathError`, one line naming the path.

Reading is strict by default: the first bad record raises a :class:`TrajectoryError` naming
``file:line`` and the field. With ``rejects=...`` bad records are written to a reject file instead
(``{"line": n, "error": "...", "raw": "..."}``, one per bad record; the file is truncated when reading
starts, so it holds this run's rejects only) and reading carries on with the next line. Each non-blank
line is one record: records in = kept + rejected, and the count is logged.

Beyond :meth:`Trajectory.from_dict`'s checks, a line is rejected for a duplicate key in any object
(JSON would keep the last value without a word). TRL stepwise lines (``prompt``, ``completions``,
``labels``) are read as trajectories (:func:`procsup.data.trajectory.from_stepwise`).

Writing is atomic: a temp file in the same folder is filled, then moved over the target with
:func:`os.replace`, so a crash or a bad record never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from procsup.data.trajectory import Trajectory, TrajectoryError, from_stepwise, is_stepwise

logger = logging.getLogger(__name__)

T = TypeVar("T")
PathLike = str | os.PathLike


class PathError(TrajectoryError, OSError):
    """A data path that cannot be used: missing, a folder, unreadable or unwritable, or the same file as
    another path of the run. Both bad input (a :class:`TrajectoryError`) and an environment error (an
    :class:`OSError`), so either ``except`` catches it; the message is one line naming the path(s)."""


def _named(paths: Mapping[str, PathLike | None] | Iterable[PathLike | None], role: str) -> list[tuple[str, Path]]:
    items = paths.items() if isinstance(paths, Mapping) else ((role, p) for p in paths)
    return [(name, Path(p)) for name, p in items if p is not None]


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links; only when both exist
    except OSError:
        return False


def check_paths(
    inputs: Mapping[str, PathLike | None] | Iterable[PathLike | None] = (),
    outputs: Mapping[str, PathLike | None] | Iterable[PathLike | None] = (),
) -> None:
    """Refuse, before anything is read or written, paths a run cannot use: an input that is missing, a
    folder or unreadable; an output that is a folder, in a missing folder or not writable; an output that
    is an input or another output (``validate F --rejects F`` would read its own rejects forever).

    ``inputs``/``outputs`` are paths or a mapping ``{role: path}`` whose roles name the paths in the
    message (``{"train_file": ..., "rejects_file": ...}``); ``None`` entries are skipped. Raises
    :class:`PathError`.
    """
    ins, outs = _named(inputs, "input"), _named(outputs, "output")
    for role, p in ins:
        if not p.exists():
            raise PathError(f"{role} {p}: no such file")
        if p.is_dir():
            raise PathError(f"{role} {p}: is a folder, not a file")
        if not os.access(p, os.R_OK):
            raise PathError(f"{role} {p}: permission denied (cannot read)")
    for role, p in outs:
        if p.is_dir():
            raise PathError(f"{role} {p}: is a folder, not a file")
        folder = p.parent
        if not folder.is_dir():
            raise PathError(f"{role} {p}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
            raise PathError(f"{role} {p}: permission denied (cannot write)")
    for i, (role, p) in enumerate(outs):
        for other_role, other in [*ins, *outs[:i]]:
            if _same_file(p, other):
                raise PathError(f"{role} {p} is the same file as {other_role} {other}: give different paths")


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(dup)
    return out


def _decode_line(raw: bytes, lineno: int) -> Any:
    """Bytes of one line -> parsed JSON value. Raises :class:`TrajectoryError` (no location yet)."""
    try:
        # A byte-order mark is legal at the start of a UTF-8 file; it is not legal JSON.
        text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise TrajectoryError(f"not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} of the line") from None
    try:
        # Python's JSON accepts NaN/Infinity; they are let through so the validator can name the field.
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as e:
        raise TrajectoryError(f"duplicate key {e.args[0]!r} in an object (JSON would keep only its last value)") from None
    except json.JSONDecodeError as e:
        raise TrajectoryError(f"invalid JSON: {e.msg} (column {e.colno}){_multiline_hint(text, e)}") from None
    except RecursionError:
        raise TrajectoryError("invalid JSON: nested too deeply") from None
    except ValueError as e:  # an integer of more than 4,300 digits
        raise TrajectoryError(f"invalid JSON: {str(e).split(':')[0]}") from None


def _multiline_hint(text: str, e: json.JSONDecodeError) -> str:
    """Why a line may not parse: a record spread over several lines (the pretty-printed JSON of a README),
    or a file cut in the middle of its last record."""
    stripped = text.strip()
    if stripped.startswith("[") and e.pos >= len(text.rstrip()):
        return "; each line must be one JSON object (a JSON array is not JSON Lines: one record per line)"
    if e.pos >= len(text.rstrip()) or stripped in ("}", "]", "},", "],") or stripped.startswith('"'):
        return "; each line must be one whole JSON object (a record spread over several lines, or a truncated file?)"
    return ""


Item = tuple[Any, Callable[[], Any], Callable[[], str]]
"""A record to parse: its location (a line number, an index), a loader of its JSON value (may raise
:class:`TrajectoryError`), and its original text for the reject file."""


def parse_items(
    path: Path, items: Iterable[Item], parse: Callable[[Any], T], *, rejects: PathLike | None, location_key: str
) -> Iterator[T]:
    """Yield ``parse(load())`` for each item. A :class:`TrajectoryError` gets ``file:location`` and is
    raised, or, with ``rejects``, written there as ``{location_key, "error", "raw"}`` and skipped; then a
    one-line count is logged at the end. The reject file is truncated first: it holds this run's rejects
    only. The one reading loop behind every reader of procsup."""
    check_paths(inputs={"input": path}, outputs={"rejects": rejects})
    n_good = n_bad = 0
    # backslashreplace: a lone surrogate in a reason becomes the JSON escape \udxxx, still valid JSON
    out = None if rejects is None else _open_for_writing(Path(rejects))
    try:
        for location, load, raw in items:
            try:
                item = parse(load())
            except TrajectoryError as e:
                located = e.located(f"{path}:{location}")
                if out is None:
                    raise located from None
                row = {location_key: location, "error": str(located), "raw": raw()}
                out.write(_json_line(row))
                n_bad += 1
                continue
            n_good += 1
            yield item
    finally:
        if out is not None:
            out.close()
    if rejects is not None:
        level = logging.WARNING if n_bad else logging.INFO
        logger.log(level, "%s: kept %d record(s), rejected %d (written to %s)", path, n_good, n_bad, rejects)


def _open_for_writing(path: Path):
    try:
        return path.open("w", encoding="utf-8", errors="backslashreplace")
    except OSError as e:
        raise PathError(f"{path}: cannot write: {e.strerror}") from None


def _jsonl_items(f) -> Iterator[Item]:
    for lineno, raw in enumerate(f, start=1):
        if raw.strip():
            yield (lineno, lambda raw=raw, n=lineno: _decode_line(raw, n),
                   lambda raw=raw: raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n"))


def iter_records(path: PathLike, parse: Callable[[Any], T], *, rejects: PathLike | None = None) -> Iterator[T]:
    """Yield ``parse(obj)`` for each JSON object in a JSONL file; blank lines are skipped.

    ``parse`` gets the decoded JSON value and raises :class:`TrajectoryError` if it is not valid;
    this loop adds ``file:line``. Without ``rejects`` the first bad record raises. With it, each bad
    record is written to ``rejects`` and skipped, and a one-line count is logged at the end. The paths
    are checked (:func:`check_paths`) when this is called, before the first record is asked for.
    """
    path = Path(path)
    check_paths(inputs={"input": path}, outputs={"rejects": rejects})
    return _iter_file(path, parse, rejects)


def _iter_file(path: Path, parse: Callable[[Any], T], rejects: PathLike | None) -> Iterator[T]:
    try:
        f = path.open("rb")
    except OSError as e:
        raise PathError(f"input {path}: cannot read: {e.strerror}") from None
    with f:
        yield from parse_items(path, _jsonl_items(f), parse, rejects=rejects, location_key="line")


def parse_trajectory(record: Any) -> Trajectory:
    """A procsup trajectory record, or a TRL stepwise one (``prompt``, ``completions``, ``labels``) converted
    on the fly: what every trajectory file reader accepts."""
    return from_stepwise(record) if is_stepwise(record) else Trajectory.from_dict(record)


def iter_jsonl(path: PathLike, *, rejects: PathLike | None = None) -> Iterator[Trajectory]:
    """Stream the trajectories of a JSONL file (procsup or TRL stepwise records, see :func:`parse_trajectory`);
    see :func:`iter_records` for errors and ``rejects``."""
    return iter_records(path, parse_trajectory, rejects=rejects)


def read_jsonl(path: PathLike, *, rejects: PathLike | None = None) -> list[Trajectory]:
    """All trajectories of a JSONL file; see :func:`iter_jsonl`."""
    return list(iter_jsonl(path, rejects=rejects))


def write_records(records: Iterable[dict[str, Any]], path: PathLike) -> None:
    """Atomically write JSON objects as JSONL (UTF-8, standard JSON: no NaN/Infinity).

    Raises :class:`TrajectoryError` located at the line the bad record would have taken, or
    :class:`PathError` for a path that cannot be written; the target is then left exactly as it was
    (or not created).
    """
    path = Path(path)
    check_paths(outputs={"output": path})

    def write(f) -> None:
        for i, record in enumerate(records):
            f.write(_encode_record(record, i, path))

    _atomic_write(path, write)


def write_json(path: PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write one JSON document atomically (a temporary file in the same folder, fsynced, then renamed), so a
    reader or a crash never sees half a file: the one writer of results, caches and manifests. NaN is written
    as Python's ``json`` writes it (a long benchmark's results are not lost to one undefined metric); raises
    :class:`PathError` for a path that cannot be written."""
    path = Path(path)
    data = (json.dumps(obj, indent=indent, ensure_ascii=False) + "\n").encode("utf-8")
    _atomic_write(path, lambda f: f.write(data))
    return path


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """``write(f)`` into a temporary file beside ``path``, then ``os.replace``: ``path`` is either left exactly
    as it was (or not created) or holds the whole new content."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # same folder: os.replace is atomic
    try:
        # os.open with 0o666 honours the umask, unlike tempfile.mkstemp's fixed 0o600.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, PathError):
            raise PathError(f"output {path}: cannot write: {e.strerror or e}") from None
        raise


def _json_line(record: Any) -> str:
    """One JSON Lines line, UTF-8 text kept readable but U+2028/U+2029 escaped: Python's ``str.splitlines``
    (and JavaScript) break lines there, and a reader that does would cut the record in two."""
    text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def _encode_record(record: dict[str, Any], index: int, path: Path) -> bytes:
    try:
        return _json_line(record).encode("utf-8")
    except (TypeError, ValueError) as e:  # ValueError covers NaN and lone surrogates
        raise TrajectoryError(f"record {index} cannot be written as JSON: {e}", where=f"{path}:{index + 1}") from None


def write_jsonl(trajectories: Iterable[Trajectory], path: PathLike) -> None:
    """Atomically write trajectories as JSONL, one :meth:`Trajectory.to_dict` per line."""
    write_records((t.to_dict() for t in trajectories), path)
