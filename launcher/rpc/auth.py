"""Bearer tokens: the server's --token-file, and who the current caller is.

Token file: one `TOKEN OWNER` per line; blank lines and lines starting with `#` are ignored.
TOKEN is at least 16 visible ASCII characters without spaces (e.g. `openssl rand -hex 24`);
OWNER is 1..64 of [A-Za-z0-9._@-] and may hold several tokens (to rotate one). A caller sends
the metadata `authorization: Bearer TOKEN`; the server keeps only SHA-256 digests of the tokens.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rankitect.errors import UserError

MIN_TOKEN_CHARS = 16
_TOKEN = re.compile(r"^[\x21-\x7e]+$")
_OWNER = re.compile(r"^[A-Za-z0-9._@\-]{1,64}$")
AUTH_HEADER = "authorization"

_CALLER_OWNER: contextvars.ContextVar[str | None] = contextvars.ContextVar("rankitect_caller_owner",
                                                                           default=None)


def current_owner() -> str | None:
    """The owner of the token the current call came with, inside a servicer method; None when
    the server runs without --token-file (every caller is then the same anonymous owner)."""
    return _CALLER_OWNER.get()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenTable:
    """SHA-256 of each token -> its owner."""

    owners: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def from_lines(lines: Iterable[str], where: str) -> "TokenTable":
        """Parse token-file lines; UserError naming `where`, the line and the rule otherwise."""
        owners: dict[str, str] = {}
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split()
            if len(parts) != 2:
                raise UserError(f"{where}, line {number}: expected 'TOKEN OWNER', got {len(parts)} fields")
            token, owner = parts
            if len(token) < MIN_TOKEN_CHARS or not _TOKEN.match(token):
                raise UserError(f"{where}, line {number}: a token must be at least {MIN_TOKEN_CHARS} visible "
                                f"ASCII characters (e.g. from 'openssl rand -hex 24'), got {len(token)}")
            if not _OWNER.match(owner):
                raise UserError(f"{where}, line {number}: owner must be 1..64 of [A-Za-z0-9._@-], "
                                f"got {owner!r}")
            digest = _digest(token)
            if digest in owners:
                raise UserError(f"{where}, line {number}: this token is already listed (for "
                                f"{owners[digest]!r}); every token must be unique")
            owners[digest] = owner
        if not owners:
            raise UserError(f"{where}: no tokens; expected lines of 'TOKEN OWNER'")
        return TokenTable(owners)

    @staticmethod
    def load(path: Path, flag: str = "--token-file") -> "TokenTable":
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{flag} {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
        return TokenTable.from_lines(text.splitlines(), f"{flag} {path}")

    def owner_of(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[str | None, str]:
        """(owner, "") for a known bearer token in `metadata`, else (None, why)."""
        values = [v for k, v in (metadata or ()) if k.lower() == AUTH_HEADER]
        if not values:
            return None, f"missing '{AUTH_HEADER}: Bearer TOKEN' metadata"
        value = values[0].decode(errors="replace") if isinstance(values[0], bytes) else values[0]
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, f"'{AUTH_HEADER}' metadata must be 'Bearer TOKEN'"
        owner = self.owners.get(_digest(token.strip()))
        if owner is None:
            return None, "unknown token"
        return owner, ""

    def __len__(self) -> int:
        return len(self.owners)


def read_client_token(path: Path, flag: str = "--token-file") -> str:
    """The token of a client's token file: the first word of its first line that is not blank
    or a comment (so a line of the server's file, `TOKEN OWNER`, works too)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{flag} {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            return text.split()[0]
    raise UserError(f"{flag} {path}: holds no token")
