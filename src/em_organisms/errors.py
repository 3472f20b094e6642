"""The one base of every error a user can cause: bad input, a missing file, a refused setting.

`cli.main` catches `EmOrganismsError` once and prints its message as one line (what, where, how to
fix) with exit status 1; `em-organisms --debug ...` shows the traceback instead. Each stage's error
class also keeps its builtin base (ValueError, RuntimeError), so older callers still catch it.
"""

from __future__ import annotations


class EmOrganismsError(Exception):
    """Something the user can fix; the message says what, where and how."""
