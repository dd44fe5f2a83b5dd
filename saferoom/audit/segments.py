"""Audit log segments: the log as a series of files, one chain running through all of them.

The records being appended go to ``audit.log`` (the active segment). When it has grown past the configured size,
the writer seals it at a record boundary: it is fsynced, renamed to ``segments/audit-<first seq>.log`` (twelve
digits, so names sort in order) and the directory fsynced; a new, empty ``audit.log`` takes its place. The
rename is atomic: a crash at any moment leaves either the old active file (rotation not done) or the sealed
segment and no or an empty ``audit.log`` (done), and both read back as the same sequence of records.

Nothing in a frame changes at a boundary: the first record of a segment chains to the last record of the one
before, so the concatenation of the files in order is exactly the log it would have been as one file, and is
verified as one (``saferoom.audit.verify``). A segment's name must match the sequence number of its first
record, so a renamed, missing or duplicated segment is caught as well as a changed byte.

Sealed segments never change again: an operator may copy them elsewhere (an archive, write-once storage) and an
auditor verify them there, offline (``saferoom audit verify --segments DIR``); a directory holding only later
segments is verified from a saved checkpoint that covers the record just before its first one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from saferoom.audit.record import HEADER, SIGNATURE_BYTES, decode_body, frame_hash
from saferoom.audit.verify import Checkpoint, VerifyReport, verify_log

__all__ = [
    "ACTIVE_FILE",
    "SEGMENTS_DIR",
    "Piece",
    "fsync_dir",
    "log_pieces",
    "read_log",
    "seal_active",
    "segment_files",
    "segment_name",
    "segment_pieces",
    "verify_segments",
]

ACTIVE_FILE = "audit.log"
SEGMENTS_DIR = "segments"
_NAME = re.compile(r"^audit-([0-9]{12})\.log$")


def segment_name(first_seq: int) -> str:
    """The file name of the sealed segment whose first record is ``first_seq``."""
    return f"audit-{first_seq:012d}.log"


@dataclass(frozen=True)
class Piece:
    """One file of the log: where its bytes start in the whole log, and the seq its name says it starts at."""

    path: Path
    base: int  # offset of its first byte in the concatenated log
    size: int
    first_seq: int  # from the name (0 for the active file: whatever follows the last segment)


def segment_files(directory: Path) -> list[tuple[int, Path]]:
    """The sealed segments in ``directory`` (``audit-<seq>.log``), in order; any other file is ignored."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def segment_pieces(segments: list[tuple[int, Path]], active: Path | None) -> list[Piece]:
    """The files of a log in order, each with its offset in the whole."""
    pieces, base = [], 0
    for first_seq, path in segments:
        size = path.stat().st_size
        pieces.append(Piece(path, base, size, first_seq))
        base += size
    if active is not None and active.exists():
        pieces.append(Piece(active, base, active.stat().st_size, 0))
    return pieces


def log_pieces(directory: Path) -> list[Piece]:
    """The files of the log kept in ``directory`` (a server's ``audit/``): its sealed segments, then audit.log."""
    return segment_pieces(segment_files(directory / SEGMENTS_DIR), directory / ACTIVE_FILE)


def read_log(pieces: list[Piece]) -> tuple[bytes, str]:
    """The concatenated bytes of ``pieces``, and what is wrong with their names ("" if nothing).

    Every sealed segment must be non-empty and begin with the record its name says, at a frame boundary. (The
    chain, order and signatures across the whole are ``verify_log``'s to check.)
    """
    data = b"".join(piece.path.read_bytes() for piece in pieces)
    for piece in pieces:
        if not piece.first_seq:
            continue
        if piece.size == 0:
            return data, f"segment {piece.path.name} is empty"
        seq = _first_seq_at(data, piece.base)
        if seq != piece.first_seq:
            found = "no readable record" if seq is None else f"record {seq}"
            return data, f"segment {piece.path.name} begins with {found}: segments were renamed, lost or reordered"
    return data, ""


def _first_prev(data: bytes) -> str:
    (size,) = HEADER.unpack_from(data, 0)
    end = HEADER.size + size + SIGNATURE_BYTES
    return decode_body(data[HEADER.size : HEADER.size + size], frame_hash(data[:end])).prev


def _first_seq_at(data: bytes, offset: int) -> int | None:
    if len(data) - offset < HEADER.size:
        return None
    (size,) = HEADER.unpack_from(data, offset)
    end = offset + HEADER.size + size + SIGNATURE_BYTES
    if end > len(data):
        return None
    try:
        return decode_body(data[offset + HEADER.size : offset + HEADER.size + size], frame_hash(data[offset:end])).seq
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


def seal_active(directory: Path, first_seq: int) -> Path:
    """Rename the (fsynced) active file to the sealed segment starting at ``first_seq``; durable on return."""
    segments = directory / SEGMENTS_DIR
    segments.mkdir(mode=0o700, exist_ok=True)
    target = segments / segment_name(first_seq)
    if target.exists():  # never overwrite a sealed segment: that would be losing records
        raise FileExistsError(f"{target} exists")
    os.rename(directory / ACTIVE_FILE, target)
    fsync_dir(segments)
    fsync_dir(directory)
    return target


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_segments(
    directory: Path,
    public_key: ed25519.Ed25519PublicKey,
    anchors: tuple[Checkpoint, ...] = (),
    ca_pem: bytes | None = None,
) -> VerifyReport:
    """Verify the segments kept in ``directory`` (an archive of ``audit-<seq>.log`` files, perhaps with an
    ``audit.log`` after them, or a server's ``audit/`` directory) as one log.

    If the first segment does not start at record 1, one of ``anchors`` must cover the record just before it
    (the segments are verified as the continuation of what it sealed) or a record in them. Every anchor must be
    signed by ``public_key`` (the caller checks).
    """
    segments = segment_files(directory / SEGMENTS_DIR) or segment_files(directory)
    pieces = segment_pieces(segments, directory / ACTIVE_FILE)
    data, problem = read_log(pieces)
    first = pieces[0].first_seq if pieces and pieces[0].first_seq else 1
    if problem:
        return VerifyReport(False, 0, 0, first - 1, "", first, problem)
    if not pieces:
        return VerifyReport(False, 0, 0, 0, "", 1, f"no audit log segments in {directory}")
    start = None
    if first > 1:
        # Either a checkpoint sealed the record just before the first segment (the chain is checked across the
        # gap), or one seals a record inside the segments: the chain from the first record up to it ends in a
        # hash the key signed, which pins every record before it, and every record after it is signed too.
        exact = next((a for a in anchors if a.covers == first - 1), None)
        if exact is not None:
            start = exact
        elif any(a.covers >= first for a in anchors):
            start = Checkpoint(first - 1, _first_prev(data), b"", b"")
        else:
            return VerifyReport(
                False,
                0,
                0,
                first - 1,
                "",
                first,
                f"the first segment starts at record {first}: give a checkpoint saved at or after record {first - 1}",
            )
    return verify_log(data, public_key, anchors=anchors, ca_pem=ca_pem, start=start)
