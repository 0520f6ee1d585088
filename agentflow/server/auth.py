"""Bearer tokens for the HTTP server: who is calling, and in which role.

Tokens come from `AGENTFLOW_TOKENS`, comma-separated `ROLE:SUBJECT:TOKEN` entries:

```sh
AGENTFLOW_TOKENS="client:ada@example.com:tok-ada,reviewer:sam:tok-sam,admin:ops:tok-ops"
```

- `client`: one customer, whose identity is the token's subject (their email address, as
  the shop's database knows it): opens threads for that customer and talks in the
  threads it owns; whatever a request body says, the tools serve that customer only;
- `reviewer`: works escalations and reads any thread, but never speaks as the customer;
- `admin`: both; may open a thread on a customer's behalf by naming them.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from agentflow.exceptions import ConfigError

__all__ = ["TOKENS_ENV", "Principal", "Role", "TokenTable"]

TOKENS_ENV = "AGENTFLOW_TOKENS"
Role = Literal["client", "reviewer", "admin"]


@dataclass(kw_only=True, frozen=True)
class Principal:
    """Who a token stands for."""

    subject: str
    """The caller's id: threads are owned by it, escalations claimed and resolved as it."""
    role: Role

    @property
    def customer(self) -> str | None:
        """The customer a client token stands for (its subject); None for the staff."""
        return self.subject if self.role == "client" else None

    @property
    def can_talk(self) -> bool:
        """May open threads and post messages as the customer."""
        return self.role in ("client", "admin")

    @property
    def can_review(self) -> bool:
        """May work escalations and read any thread."""
        return self.role in ("reviewer", "admin")


def _masked(entry: str) -> str:
    """The entry with its token part hidden, for error messages."""
    head, sep, _ = entry.rpartition(":")
    return f"{head}:***" if sep else "***"


class TokenTable:
    """Map bearer tokens to principals; lookups compare in constant time."""

    def __init__(self, principals: Mapping[str, Principal]) -> None:
        self._principals = dict(principals)

    def __len__(self) -> int:
        return len(self._principals)

    @classmethod
    def parse(cls, text: str, *, source: str = TOKENS_ENV) -> TokenTable:
        """Read comma-separated `ROLE:SUBJECT:TOKEN` entries.

        Raises:
            ConfigError: An entry is malformed, has an unknown role, or repeats a token;
                the message names `source` and the entry (its token hidden).
        """
        principals: dict[str, Principal] = {}
        entries = [e.strip() for e in text.split(",") if e.strip()]
        for number, entry in enumerate(entries, start=1):
            where = f"entry {number} ({_masked(entry)!r})"
            parts = entry.split(":", 2)
            if len(parts) != 3 or not all(p.strip() for p in parts):
                raise ConfigError(f"{where}: expected ROLE:SUBJECT:TOKEN", key=source)
            role, subject, token = (p.strip() for p in parts)
            if role not in get_args(Role):
                raise ConfigError(
                    f"{where}: role must be one of {', '.join(get_args(Role))}, not {role!r}",
                    key=source,
                )
            if token in principals:
                raise ConfigError(f"{where}: the token is given twice", key=source)
            principals[token] = Principal(subject=subject, role=role)  # type: ignore[arg-type]
        return cls(principals)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TokenTable:
        """Read the table from `AGENTFLOW_TOKENS`.

        Raises:
            ConfigError: The variable is unset or empty (nobody could call the server),
                or an entry in it is malformed.
        """
        text = (os.environ if environ is None else environ).get(TOKENS_ENV, "")
        if not text.strip():
            raise ConfigError(
                "not set: give comma-separated ROLE:SUBJECT:TOKEN entries "
                "(roles: client, reviewer, admin)",
                key=TOKENS_ENV,
            )
        return cls.parse(text)

    def lookup(self, token: str) -> Principal | None:
        """The principal the token stands for, or None for an unknown token."""
        found = None
        given = token.encode()
        for known, principal in self._principals.items():
            # Compare against every token, so the time taken says nothing about which matched.
            if hmac.compare_digest(known.encode(), given):
                found = principal
        return found
