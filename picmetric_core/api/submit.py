"""An upload or a URL from a request, read within the limits (through :func:`intake`) and handed to the service."""

from __future__ import annotations

from fastapi import UploadFile

from picmetric_core.config import Settings
from picmetric_core.errors import ImageTooLarge
from picmetric_core.intake import Upload, intake
from picmetric_core.intake.images import format_size
from picmetric_core.runtime import Runtime
from picmetric_core.submission import Submission


def read_upload(file: UploadFile, settings: Settings) -> bytes:
    data = file.file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise ImageTooLarge(f"The image is too large: the limit is {format_size(settings.max_image_bytes)}.")
    return data


def submit_upload(runtime: Runtime, file: UploadFile) -> Submission:
    incoming = intake(Upload(read_upload(file, runtime.settings), file.filename), runtime.settings)
    return runtime.service().submit_incoming(incoming)


def submit_url(runtime: Runtime, url: str) -> Submission:
    incoming = intake(url, runtime.settings, fetch_slots=runtime.fetch_slots)
    return runtime.service().submit_incoming(incoming)
