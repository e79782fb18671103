"""What a process holds for its lifetime, in one place: settings, the networks' loader, the service, the
batch launcher and the URL fetch slots.

Every door asks a :class:`Runtime` instead of building these itself. The API's ``create_app`` makes one
per app (tests make many apps, each with its own loader); the Streamlit app, the CLI and the batch
workers ask :func:`shared_runtime`, one per process, settings and kind of loader.

Example:
    >>> from picmetric_core.config import Settings
    >>> settings = Settings(_env_file=None, data_dir="/tmp/picmetric")
    >>> shared_runtime(settings) is shared_runtime(settings.model_copy())
    True
    >>> shared_runtime(settings).fetch_slots.limit
    8
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import SecretStr

from picmetric_core.config import Settings
from picmetric_core.intake.fetch import FetchSlots
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.service import PicMetricService

if TYPE_CHECKING:
    from picmetric_core.batch.jobs import JobStore
    from picmetric_core.batch.service import BatchLauncher
    from picmetric_core.video.jobs import VideoJobs

log = logging.getLogger(__name__)

LoaderFactory = Callable[[Settings], ModelLoader]
"""Makes a runtime's model loader from its settings (``ModelLoader`` itself by default)."""


class Runtime:
    """The settings, one model loader, one fetch-slot pool, and one service and batch launcher made on first use.

    Thread-safe. :meth:`service` is tried again after a failure (a database that was down), and
    :meth:`close` releases the launcher and the service; a later call opens them again.

    Args:
        settings: What every object here is made from.
        loader: The networks; a :class:`ModelLoader` for ``settings`` (not started) by default.
    """

    def __init__(self, settings: Settings, loader: ModelLoader | None = None) -> None:
        self.settings = settings
        self.loader = loader if loader is not None else ModelLoader(settings)
        self.fetch_slots = FetchSlots(settings.url_max_concurrent)
        self._service: PicMetricService | None = None
        self._service_lock = threading.Lock()
        self._launcher: BatchLauncher | None = None
        self._jobs: JobStore | None = None
        self._batch_lock = threading.Lock()
        self._videos: VideoJobs | None = None
        self._videos_lock = threading.Lock()

    def service(self) -> PicMetricService:
        """The service, created on first use (again after a failure, e.g. a database that was down).

        Raises:
            DatabaseUnavailable, StoreUnavailable: it cannot start now; the next call tries again.
        """
        with self._service_lock:
            if self._service is None:
                self._service = PicMetricService(self.settings, self.loader)
            return self._service

    def launcher(self) -> BatchLauncher:
        """The one batch launcher of this runtime (jobs run one after another on its background thread)."""
        from picmetric_core.batch.service import BatchLauncher

        with self._batch_lock:
            if self._launcher is None:
                self._launcher = BatchLauncher(self.settings, self.service().engine)
            return self._launcher

    def jobs(self) -> JobStore:
        """Batch jobs and items in the service's database (what the batch workers record into)."""
        from picmetric_core.batch.jobs import JobStore

        with self._batch_lock:
            if self._jobs is None:
                self._jobs = JobStore(self.service().engine)
            return self._jobs

    def videos(self) -> VideoJobs:
        """The video analyses of this runtime (jobs run on its own background threads; issue #23)."""
        from picmetric_core.video.jobs import VideoJobs

        with self._videos_lock:
            if self._videos is None:
                self._videos = VideoJobs(self.settings, self.service, self.loader, self.fetch_slots)
            return self._videos

    def warm_up(self) -> None:
        """Start loading the networks and open the database and store (a failure is logged: calls retry it)."""
        self.loader.start()
        try:
            self.service()
        except Exception:
            log.exception("the service could not start yet; requests will retry")

    def close(self) -> None:
        """Stop the launcher's and the video jobs' threads and close the service's database connections."""
        with self._videos_lock:
            if self._videos is not None:
                self._videos.close()
            self._videos = None
        with self._batch_lock:
            if self._launcher is not None:
                self._launcher.close()
            self._launcher = self._jobs = None
        with self._service_lock:
            if self._service is not None:
                self._service.close()
                self._service = None


def settings_key(settings: Settings) -> str:
    """A key that changes with any setting, secrets included (hashed, so the key itself reveals none).

    Example:
        >>> a = Settings(_env_file=None, s3_secret="one")
        >>> settings_key(a) == settings_key(a.model_copy()), settings_key(a) == settings_key(
        ...     a.model_copy(update={"s3_secret": SecretStr("two")}))
        (True, False)
    """
    values = {name: value.get_secret_value() if isinstance(value, SecretStr) else value for name, value in settings}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


_shared: dict[tuple[str, LoaderFactory], Runtime] = {}
_shared_lock = threading.Lock()


def shared_runtime(settings: Settings, *, loader_factory: LoaderFactory = ModelLoader) -> Runtime:
    """This process's runtime for ``settings``, made on the first call with ``loader_factory``.

    One per settings (:func:`settings_key`) and loader factory: the app's loader warms the networks
    up, a batch worker's runs none. Pass a module-level function: each new lambda is another key.
    Its objects live as long as the process (the app serves every session, a Ray worker every block).
    """
    key = (settings_key(settings), loader_factory)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Runtime(settings, loader_factory(settings))
        return _shared[key]
