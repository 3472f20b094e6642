"""The arena's errors, importable without loading torch (the CLI's `--help` stays fast)."""

from em_organisms.errors import EmOrganismsError


class OrganismError(EmOrganismsError, ValueError):
    """An organism the arena cannot offer; the message names what the user or operator gave."""
