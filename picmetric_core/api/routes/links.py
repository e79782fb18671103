"""Links that never expire: one route per stored object, answered with a fresh link or the bytes.

Old clients keep ``original``, ``yolov3_source`` and ``faces_source`` forever, so the old shape hands
out ``{base}/v1/analyses/{md5}/{kind}`` instead of a presigned URL (which expires, and is longer than
the old back end's 255-character columns). Each request presigns anew (S3) or streams the bytes
(a local folder). An overlay that was never drawn is drawn on that first request, from the stored
original and results, and kept in the store (:meth:`PicMetricService.overlay`) before the redirect or
the bytes: no link ever leads to a missing overlay.

With ``PICMETRIC_API_TOKEN`` set, a link carries ``sig``, an HMAC of the md5 and the kind under the
token: an ``<img src>`` cannot send a bearer header, and the token itself never appears in a link.
The route accepts either the bearer token or a valid ``sig``; changing the token retires old links.
A clip's objects are signed the same way (:func:`signed_link`, :func:`check_link_access`), so a
``<video src>`` plays them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from picmetric_core.api.access import OBJECT_KINDS, SELF_CHECKED, ObjectKind
from picmetric_core.api.deps import RuntimeDep, token_matches
from picmetric_core.api.schemas import ERRORS, ErrorBody
from picmetric_core.config import Settings
from picmetric_core.overlays import OVERLAY_KINDS
from picmetric_core.store.objects import ObjectNotFound, content_type_of
from picmetric_core.submission import Submission

SIGNATURE_CHARS = 22  # 132 bits of HMAC-SHA256

router = APIRouter(prefix="/v1/analyses", tags=["analyses"])


def link_signature(secret: str, md5: str, kind: str) -> str:
    """The ``sig`` that opens ``kind`` of ``md5`` on a server with this token."""
    digest = hmac.new(secret.encode(), f"{md5.lower()}/{kind}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:SIGNATURE_CHARS]


def public_base_url(settings: Settings, request: Request) -> str:
    """``PICMETRIC_PUBLIC_BASE_URL``; else, with ``PICMETRIC_TRUST_FORWARDED_HOST``, the proxy's
    ``X-Forwarded-Host`` (and ``X-Forwarded-Proto``); else the address the request came to (behind a
    proxy, uvicorn's ``--proxy-headers`` supplies the scheme)."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    if settings.trust_forwarded_host and (host := _forwarded(request, "x-forwarded-host", HOST)):
        scheme = _forwarded(request, "x-forwarded-proto", SCHEME) or request.url.scheme
        return f"{scheme.lower()}://{host}"
    return str(request.base_url).rstrip("/")


HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
SCHEME = re.compile(r"^https?$", re.IGNORECASE)


def _forwarded(request: Request, header: str, valid: re.Pattern[str]) -> str | None:
    """The first (client-side) value of a proxy header, if it is well formed."""
    value = request.headers.get(header, "").split(",")[0].strip()
    return value if valid.fullmatch(value) else None


def stable_link(settings: Settings, request: Request, md5: str, kind: ObjectKind) -> str:
    """The permanent link to one stored object of ``md5``."""
    return signed_link(settings, f"{public_base_url(settings, request)}/v1/analyses/{md5}/{kind}", md5, kind)


def signed_link(settings: Settings, link: str, md5: str, kind: str) -> str:
    """``link`` with the ``sig`` that opens ``kind`` of ``md5`` when the API token is set (as it is without one)."""
    if settings.api_token is None:
        return link
    return f"{link}?sig={link_signature(settings.api_token.get_secret_value(), md5, kind)}"


def object_urls(request: Request, submission: Submission) -> dict[str, str]:
    """The permanent link to each stored object of ``submission``: what v1 bodies hand out.

    Never the store's own links: a presigned URL names the store's endpoint, bucket and access key
    id, and expires. Those appear only in this route's redirect, made fresh for each request.
    """
    settings: Settings = request.app.state.runtime.settings
    md5 = submission.analysis.md5
    return {kind: stable_link(settings, request, md5, kind) for kind in OBJECT_KINDS}


@router.get(
    "/{md5:md5}/{kind:object_kind}",
    openapi_extra=SELF_CHECKED,
    responses={
        307: {"description": "A fresh link to the object in the bucket"},
        401: ERRORS[401],
        404: {"model": ErrorBody, "description": "Never analysed"},
        503: ERRORS[503],
    },
    summary="A stored original or overlay, by a link that never expires",
)
def get_stored_object(
    request: Request,
    runtime: RuntimeDep,
    md5: str,
    kind: ObjectKind,
    sig: Annotated[str | None, Query(max_length=64, description="The link's signature (with a token)")] = None,
) -> Response:
    check_link_access(runtime.settings, request, md5, kind, sig)
    service = runtime.service()
    submission = service.get(md5)
    if submission is None:
        raise HTTPException(404, f"No analysis of an image with md5 {md5}.")
    key = getattr(submission.record.keys, kind)
    overlay = kind if kind in OVERLAY_KINDS else None
    try:
        fresh = service.overlay_link(md5, overlay) if overlay else service.object_link(key)
        if fresh is not None:
            return RedirectResponse(fresh, status_code=307, headers={"Cache-Control": "no-store"})
        data = service.overlay(md5, overlay) if overlay else service.read_object(key)
    except ObjectNotFound:
        raise HTTPException(404, "No such object.") from None
    headers = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
    return Response(data, media_type=content_type_of(key), headers=headers)


def check_link_access(settings: Settings, request: Request, md5: str, kind: str, sig: str | None) -> None:
    """Nothing when the request may read ``kind`` of ``md5``: no token is set, or it brings the token or the sig.

    Raises:
        HTTPException: 401, with neither.
    """
    if settings.api_token is None:
        return
    token = settings.api_token.get_secret_value()
    if sig is not None and hmac.compare_digest(sig.encode(), link_signature(token, md5, kind).encode()):
        return
    if token_matches(settings.api_token, request.headers.get("authorization")):
        return
    raise HTTPException(
        401,
        "This link is not valid here: use the link as the API gave it, or send Authorization: Bearer <token>.",
        headers={"WWW-Authenticate": "Bearer"},
    )
