"""Recorded traces uploaded into a running dashboard: kept apart, checked, named by content.

    box = UploadDir()                         a temporary directory of its own, removed
                                              with the object (never the user's cwd)
    workload = box.store("my.npz", data)      "trace:/tmp/xipmodel-uploads-…/<digest>/my.npz"

An upload is written under the SHA-256 of its bytes, so the workload names (and with
them the RunCache keys) of two different files uploaded under the same name differ,
and the same bytes uploaded again name the same workload (its runs are reused). The
file is then read as any trace workload is (sources.workload_name: PageTrace.load, the
recorded file sizes, the maps); a file that is not a trace is removed again and raises
TraceFileError with a one-line message naming the upload (not the temporary path). An
upload over MAX_UPLOAD_BYTES raises ParameterError before anything is written.
No plotly or ipywidgets here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Final

from xipmodel.errors import ParameterError, TraceFileError
from xipmodel.workloads.sources import TRACE_PREFIX, workload_name

__all__ = ["MAX_UPLOAD_BYTES", "UploadDir", "upload_file_name"]

# The shipped traces are under 256 KiB; a recording of a long run may be a few MiB. The
# browser sends an upload to the kernel in one websocket message, and Jupyter's server
# (tornado's websocket_max_message_size) closes the connection on one over 10 MiB: a file
# that large never arrives here. What arrives is refused above this limit.
MAX_UPLOAD_BYTES: Final = 8 << 20
_NAME_BYTES: Final = 100


def upload_file_name(name: str) -> str:
    """The file name an upload is stored under: the last component of `name`, letters,
    digits, '.', '_' and '-' only (others become '_'), at most 100 characters, no
    leading dot, ending in .npz."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("\\", "/").rsplit("/", 1)[-1])
    base = base.lstrip(".").removesuffix(".npz")[:_NAME_BYTES] or "upload"
    return f"{base}.npz"


class UploadDir:
    """A temporary directory holding a dashboard's uploads (see the module docstring)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="xipmodel-uploads-"))
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def cleanup(self) -> None:
        """Remove the directory and every upload in it (also done when garbage-collected)."""
        self._remove()

    def store(self, name: str, content: bytes | memoryview) -> str:
        """The canonical trace workload of the upload `content` named `name` (written here
        under its digest), else TraceFileError or ParameterError in one line."""
        size = len(content) if isinstance(content, bytes) else content.nbytes
        if size > MAX_UPLOAD_BYTES:
            raise ParameterError(f"{name}: {size / 2**20:.1f} MiB, more than the "
                                 f"{MAX_UPLOAD_BYTES / 2**20:g} MiB an uploaded trace may have")
        digest = hashlib.sha256(content).hexdigest()[:16]
        folder = self.path / digest
        target = folder / upload_file_name(name)
        if not target.exists():
            folder.mkdir(exist_ok=True)
            partial = folder / f".{target.name}.partial"
            partial.write_bytes(content)
            os.replace(partial, target)  # never a half-written file under the trace's name
        try:
            return workload_name(str(target))
        except ParameterError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise TraceFileError(f"{name} is not a trace the model can run: "
                                 f"{_reason(str(exc), target, name)}") from exc


def _reason(message: str, target: Path, name: str) -> str:
    """`message` without the prefixes naming the temporary path, on one line."""
    for prefix in (f"Scenario: workload {TRACE_PREFIX + str(target)!r}: ",
                   f"Scenario: workload {str(target)!r}: ", f"PageTrace.load: {target}: ",
                   f"{target}: "):
        message = message.replace(prefix, "")
    return " ".join(message.replace(str(target), name).split())
