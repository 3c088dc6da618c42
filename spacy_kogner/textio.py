"""Reading the text files users hand us: UTF-8, a leading BOM allowed, and errors that say where.

A corpus, a KG table, a synonym table or a teacher index saved in another encoding (UTF-16 from a
spreadsheet, latin-1 from an older tool) must fail with the file, the line and the byte, never
with a bare ``UnicodeDecodeError``. Each reader catches the decoding error and raises its own
format error with ``where_not_utf8``'s line and message, e.g.
``corpus.tsv:3: not valid UTF-8 (byte 0xff at offset 41); re-encode the file as UTF-8``.

A byte-order mark (Excel and Notepad write one) is stripped (``utf-8-sig``), so it never sticks
to the first token, the first column name or a ``-DOCSTART-`` line.

This module imports nothing else from the package; everything else may import it.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import IO

ENCODING = "utf-8-sig"  # UTF-8; a BOM at the start is dropped
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def open_text(path: str | Path, newline: str | None = None) -> IO[str]:
    """A text handle on a plain or ``.gz`` file, decoded as UTF-8 (a leading BOM dropped)."""
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=ENCODING, newline=newline)
    return open(path, encoding=ENCODING, newline=newline)  # noqa: SIM115 - the caller closes it


def read_text(path: str | Path) -> str:
    """A whole file as UTF-8 text (a leading BOM dropped)."""
    with open_text(path) as handle:
        return handle.read()


def where_not_utf8(path: str | Path, err: UnicodeDecodeError | None = None) -> tuple[int | None, str]:
    """``(line, message)`` for a file that is not UTF-8: the first bad byte, its offset and line.

    Runs only after a decoding error, so the exact scan costs nothing on good files. A multi-byte
    UTF-8 sequence never contains a newline byte, so decoding line by line finds the same byte."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    offset = 0
    with opener(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                if line_no == 1 and raw.startswith(_UTF16_BOMS):
                    hint = "; the file looks like UTF-16"
                else:
                    hint = ""
                where = " of the decompressed text" if opener is gzip.open else ""
                return line_no, (
                    f"not valid UTF-8 (byte 0x{raw[bad.start]:02x} at offset {offset + bad.start}{where}{hint}); "
                    "re-encode the file as UTF-8"
                )
            offset += len(raw)
    reason = f" ({err.reason})" if err is not None else ""
    return None, f"not valid UTF-8{reason}; re-encode the file as UTF-8"
