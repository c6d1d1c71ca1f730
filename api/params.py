"""Typed path and query parameters: ids are validated at the edge, so that no stray byte (a NUL, say) reaches
the database, and a malformed id is a clear 400 naming the parameter."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

from ledger.domain.events import EVENT_ID_PATTERN, ID_PATTERN

IdPath = Annotated[str, PathParameter(pattern=ID_PATTERN, max_length=128, description="lowercase ASCII id")]
EventIdPath = Annotated[str, PathParameter(pattern=EVENT_ID_PATTERN, description="sha256: + 64 hex digits")]
TokenIdPath = Annotated[str, PathParameter(pattern=r"^[0-9a-f]{16}$", description="token id")]
IdQuery = Annotated[str | None, QueryParameter(pattern=ID_PATTERN, max_length=128)]
RoleQuery = Annotated[
    str | None,
    QueryParameter(
        pattern=r"^(miner|processor|recycler|manufacturer|trader|carrier|auditor|customs|registrar)$"
    ),
]
StatusQuery = Annotated[
    str | None, QueryParameter(pattern=r"^(at_facility|in_transit|consumed|split|merged)$")
]
