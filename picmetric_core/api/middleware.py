"""What every request passes through before a route: the token, the body's size, the database budget.

Order, outermost first (``create_app`` adds them): CORS (when configured), :class:`TokenGate` (nothing is
read for a caller without the token), :class:`BodyLimit` (nothing over the limit is spooled),
:class:`DatabaseBudget` (one deadline for all of a request's database waits).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from picmetric_core.api.deps import TOKEN_REQUIRED, token_matches
from picmetric_core.intake.images import format_size
from picmetric_core.store.database import database_budget

# Multipart framing around the image: a body longer than the image limit plus this is refused unread.
MULTIPART_SLACK_BYTES = 64 * 1024


class TokenGate:
    """With a token configured, refuses every request without it, but CORS preflights and what
    ``is_open`` lets through (routes marked open or self-checked; see ``api.access``).

    It runs before routing, so no request body is read, parsed or spooled for a caller without the token.
    """

    def __init__(self, app: ASGIApp, token: SecretStr | None, is_open: Callable[[Scope], bool]) -> None:
        self.app = app
        self.token = token
        self.is_open = is_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is not None and scope["type"] == "http" and self._guarded(scope):
            authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not token_matches(self.token, authorization):
                response = JSONResponse(
                    {"error": TOKEN_REQUIRED}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _guarded(self, scope: Scope) -> bool:
        return scope["method"] != "OPTIONS" and not self.is_open(scope)


class BodyLimit:
    """Refuses a request body larger than the image limit: unread when declared so, else as it arrives.

    A chunked body (no ``Content-Length``) is counted chunk by chunk as the app reads it, and the
    read that passes the limit ends the request with a 413, so nothing over the limit is ever
    spooled to disk. ``larger`` gives the paths under a prefix a limit of their own (videos).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"The image is too large: the limit is {format_size(max_bytes)}."
        self.larger = {
            prefix: (limit, f"The video is too large: the limit is {format_size(limit)}.")
            for prefix, limit in (larger or {}).items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, message = next(
            (value for prefix, value in self.larger.items() if scope["path"].startswith(prefix)),
            (self.max_bytes, self.message),
        )
        allowed = limit + MULTIPART_SLACK_BYTES
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > allowed:
            await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
            return
        received = 0
        responded = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > allowed:
                    # FastAPI re-raises an HTTPException from body parsing, so the error handler answers 413.
                    raise HTTPException(413, message)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except HTTPException as error:
            if error.status_code != 413 or responded:
                raise
            await JSONResponse({"error": message}, status_code=413)(scope, receive, send)


class DatabaseBudget:
    """Gives each request one budget for all its database waits (:func:`database_budget`), so a
    silent database costs a request at most ``seconds`` however many waits it queues behind."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with database_budget(self.seconds):
            await self.app(scope, receive, send)
