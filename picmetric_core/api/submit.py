"""An upload or a URL from a request, read within the limits and handed to the service."""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit

from fastapi import UploadFile

from picmetric_core.api.deps import Runtime
from picmetric_core.config import Settings
from picmetric_core.errors import ImageTooLarge
from picmetric_core.intake.images import decode_for, format_size
from picmetric_core.service import Submission


def read_upload(file: UploadFile, settings: Settings) -> bytes:
    data = file.file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise ImageTooLarge(f"The image is too large: the limit is {format_size(settings.max_image_bytes)}.")
    return data


def submit_upload(runtime: Runtime, file: UploadFile) -> Submission:
    image = decode_for(runtime.settings, read_upload(file, runtime.settings))
    return runtime.service().submit(image, source="upload", filename=file.filename or None)


def submit_url(runtime: Runtime, url: str) -> Submission:
    from picmetric_core.intake.fetch import fetch_url

    with runtime.fetch_slots.slot():
        fetched = fetch_url(url, runtime.settings)
    image = decode_for(runtime.settings, fetched.data)
    name = PurePosixPath(urlsplit(fetched.final_url).path).name or None
    return runtime.service().submit(image, source="url", filename=name, source_url=fetched.url)
