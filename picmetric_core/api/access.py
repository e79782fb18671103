"""Who may call a route, said where the route is declared; and the path segments routes match on.

With ``PICMETRIC_API_TOKEN`` set, every route needs the token unless it is declared with
``openapi_extra=OPEN`` (liveness, the upload test page; FastAPI's docs are open too) or
``openapi_extra=SELF_CHECKED`` (stable object links: the token or the link's own signature, which the
route checks). :func:`open_matcher` reads those marks from the app's routes for ``TokenGate``, and
:func:`document_token` writes the same answer into the OpenAPI schema, so there is no list to keep.

``{md5:md5}`` and ``{kind:object_kind}`` only match what they name, so no route can take another's
path (``/v1/analyses/export`` is never an md5) whatever order the routers are included in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

ACCESS = "x-picmetric-access"
OPEN = {ACCESS: "open"}
"""No token needed: nothing private in what the route answers."""
SELF_CHECKED = {ACCESS: "token-or-signature"}
"""The route checks the token or its link's signature itself (an ``<img src>`` cannot send a header)."""
ObjectKind = Literal["original", "detections", "faces", "thumbnail"]
OBJECT_KINDS: tuple[str, ...] = get_args(ObjectKind)


class Md5Convertor(Convertor[str]):
    """An image's md5: 32 hexadecimal digits, handed to the route in lower case."""

    regex = "[0-9a-fA-F]{32}"

    def convert(self, value: str) -> str:
        return value.lower()

    def to_string(self, value: str) -> str:
        return value.lower()


class ObjectKindConvertor(Convertor[str]):
    """One of an analysis' stored objects."""

    regex = "|".join(OBJECT_KINDS)

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("md5", Md5Convertor())
register_url_convertor("object_kind", ObjectKindConvertor())


def open_matcher(app: FastAPI) -> Callable[[Scope], bool]:
    """Whether a request is for a route that answers without the token (read from the routes once)."""
    open_routes: list[BaseRoute] | None = None

    def is_open(scope: Scope) -> bool:
        nonlocal open_routes
        if open_routes is None:
            open_routes = [route for route in _every_route(app.routes) if _answers_without_token(app, route)]
        return any(route.matches(scope)[0] == Match.FULL for route in open_routes)

    return is_open


def document_token(app: FastAPI) -> None:
    """Declare the bearer token in the OpenAPI schema on every operation that needs it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {"type": "http", "scheme": "bearer", "description": "PICMETRIC_API_TOKEN"}
        for operations in schema["paths"].values():
            for operation in operations.values():
                access = operation.get(ACCESS)
                if access is None:
                    operation["security"] = [{"bearer": []}]
                elif access == SELF_CHECKED[ACCESS]:
                    operation["security"] = [{"bearer": []}, {}]  # or the link's `sig`
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _every_route(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes, those of included routers too (FastAPI keeps an included router as one route)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _every_route(included.routes)
        else:
            yield route


def _answers_without_token(app: FastAPI, route: BaseRoute) -> bool:
    if isinstance(route, APIRoute):
        return (route.openapi_extra or {}).get(ACCESS) is not None
    docs = {app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url}
    return getattr(route, "path", None) in docs - {None}
