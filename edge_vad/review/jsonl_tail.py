"""Read what was appended to a JSON-lines file since the last read, a whole line at a time.

    tail = JsonlTail(events_dir / "events.jsonl")
    records = tail.read_new()      # [] when nothing new; call again later for more

Only complete lines (ending in a newline) are consumed: a line being written, or torn by a crash inside
a write, stays pending. When the writer later terminates a torn line (JsonlEventWriter does on opening),
it becomes an unparseable complete line and is skipped with a warning, as `events.read_events` does.
A file that shrinks or is replaced (log rotation, a new folder copied over) is read again from its start.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

log = logging.getLogger("edge_vad.review")


class JsonlTail:
    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._offset = 0
        self._inode: Optional[int] = None
        self._line = 0  # complete lines consumed so far (for warnings)

    @property
    def pending_bytes(self) -> int:
        """Bytes after the last complete line (a torn or half-written final line); 0 when none."""
        try:
            return max(0, os.stat(self.path).st_size - self._offset)
        except FileNotFoundError:
            return 0

    def read_new(self) -> List[Dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if self._inode is not None and (st.st_ino != self._inode or st.st_size < self._offset):
            log.info("%s was replaced or truncated; reading it again from the start", self.path)
            self._offset, self._line = 0, 0
        self._inode = st.st_ino
        if st.st_size <= self._offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read(st.st_size - self._offset)
        end = data.rfind(b"\n")
        if end < 0:
            return []  # only part of a line so far
        self._offset += end + 1
        records = []
        for raw in data[:end].split(b"\n"):
            self._line += 1
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("%s:%d: skipping a torn line", self.path, self._line)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                log.warning("%s:%d: skipping a line that is not a JSON object", self.path, self._line)
        return records
