"""Video analyses for every door: run in the background (the app, the API) or at once (the CLI, batch), kept
in the store and the database, listed, read and deleted.

One :class:`VideoJobs` per runtime (:meth:`picmetric_core.runtime.Runtime.videos`). Jobs run on a small pool of
worker threads (``video_workers``, 1 by default: each analysis already uses every core for its networks);
their state lives in this process (the API runs one worker process). A clip stored before with the same
sampling rate and counting line is not analysed again.

Example:
    >>> jobs = runtime.videos()  # doctest: +SKIP
    >>> job_id = jobs.submit(open("clip.mp4", "rb").read(), "clip.mp4")  # doctest: +SKIP
    >>> jobs.job(job_id).state  # doctest: +SKIP
    'running'
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from picmetric_core.errors import PicMetricError, client_message
from picmetric_core.intake.incoming import url_filename
from picmetric_core.intake.names import clean_filename
from picmetric_core.video import exports
from picmetric_core.video.analysis import AnalysedClip, ClipOptions, analyze_clip
from picmetric_core.video.frames import frame_at
from picmetric_core.video.probe import Deadline, VideoLimits, VideoSource, probe, scan
from picmetric_core.video.results import CountingLine, FrameResult, StoredVideo, VideoInfo, VideoJob
from picmetric_core.video.store import Parameters, VideoStore
from picmetric_core.video.watchdog import DeadlineWatch

if TYPE_CHECKING:
    from picmetric_core.config import Settings
    from picmetric_core.history import HistoryQuery
    from picmetric_core.intake.fetch import FetchSlots
    from picmetric_core.lifecycle import ModelLoader
    from picmetric_core.service import PicMetricService

log = logging.getLogger(__name__)

Origin = Literal["upload", "url", "batch"]
ProgressCallback = Callable[[str, float], None]
"""Told the stage ("probing", "waiting for the networks", "analysing", "encoding", "storing") and progress 0..1."""
KEPT_JOBS = 200
"""Finished jobs remembered for polling; older ones are forgotten (their videos stay stored)."""
FAILED_UNEXPECTEDLY = "The video could not be analysed because of an error on the server; it has been logged."


@dataclass
class _Job:
    """A job's mutable state, read by :meth:`VideoJobs.job` as a frozen :class:`VideoJob`."""

    job_id: str
    filename: str
    state: str = "queued"
    progress: float = 0.0
    stage: str = "queued"
    error: str | None = None
    video_id: str | None = None
    partial: list[FrameResult] = field(default_factory=list)


class VideoJobs:
    """Analyses clips and keeps them. Thread-safe.

    Args:
        settings: Limits, sampling rate, workers.
        service: The photo service, for its database engine and object store (made on first use).
        loader: The networks.
        fetch_slots: The process's cap on URL fetches at once.
    """

    def __init__(
        self,
        settings: Settings,
        service: Callable[[], PicMetricService],
        loader: ModelLoader,
        fetch_slots: FetchSlots | None = None,
    ) -> None:
        self.settings = settings
        self.limits = VideoLimits.from_settings(settings)
        self._service = service
        self._loader = loader
        self._fetch_slots = fetch_slots
        self._store: VideoStore | None = None
        self._store_lock = threading.Lock()
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=settings.video_workers, thread_name_prefix="picmetric-video")

    # Reading a clip before analysing it -------------------------------------------------------------------

    def probe(self, data: VideoSource) -> VideoInfo:
        """What the clip declares, within the limits.

        Raises:
            VideoRejected, VideoTooLarge, VideoTimedOut: with a message for the person who sent it.
        """
        deadline = Deadline(self.limits.deadline_s)
        return DeadlineWatch(deadline).run(lambda: probe(data, self.limits, deadline), "probing")

    def poster(self, data: bytes) -> np.ndarray:
        """The frame ~1 s in (or the last, for a shorter clip) as full-size RGB, upright: where a counting line is
        drawn."""
        deadline = Deadline(self.limits.deadline_s)

        def first_second() -> np.ndarray:
            return frame_at(data, probe(data, self.limits, deadline), 1.0, self.limits, deadline)

        return DeadlineWatch(deadline).run(first_second, "reading the poster")

    # Analysing ---------------------------------------------------------------------------------------------

    def submit(
        self,
        data: VideoSource,
        filename: str,
        *,
        line: CountingLine | None = None,
        sample_fps: float | None = None,
        source: Origin = "upload",
        source_url: str | None = None,
        discard: bool = False,
    ) -> str:
        """Start analysing ``data`` in the background; returns the job id (:meth:`job` follows it).

        ``data`` may be the path of a file (an upload spooled to disk); with ``discard`` the file is removed
        when the job ends.
        """
        name = clean_filename(filename) or "video"
        job = self._new_job(name)

        def run() -> StoredVideo:
            try:
                return self.analyze_file(
                    data,
                    name,
                    line=line,
                    sample_fps=sample_fps,
                    on_progress=self._reporter(job),
                    on_frame=job.partial.append,
                    source=source,
                    source_url=source_url,
                )
            finally:
                if discard and isinstance(data, Path):
                    data.unlink(missing_ok=True)

        self._pool.submit(self._run_job, job, run)
        return job.job_id

    def submit_url(self, url: str, *, line: CountingLine | None = None, sample_fps: float | None = None) -> str:
        """Fetch a clip by URL (every fetch rule of photos, the video size limit) and analyse it in the background.

        The fetch itself runs in the job: its refusals (a private address, too large, not a video) end the job
        with their message.
        """
        job = self._new_job(url_filename(url) or "video")

        def run() -> StoredVideo:
            job.stage = "fetching"
            data, name = self.fetch(url)
            job.filename = name
            return self.analyze_file(
                data,
                name,
                line=line,
                sample_fps=sample_fps,
                on_progress=self._reporter(job),
                on_frame=job.partial.append,
                source="url",
                source_url=url,
            )

        self._pool.submit(self._run_job, job, run)
        return job.job_id

    def fetch(self, url: str) -> tuple[bytes, str]:
        """The clip at ``url`` and its file name, under the URL rules and the video byte limit.

        Raises:
            UrlRefused, FetchFailed, ServerBusy, VideoTooLarge, VideoRejected: see :func:`fetch_url`.
        """
        from picmetric_core.intake.fetch import fetch_url
        from picmetric_core.video.probe import sniff_container

        with self._fetch_slots.slot() if self._fetch_slots is not None else nullcontext():
            fetched = fetch_url(url, self.settings, max_bytes=self.limits.max_bytes, accept=sniff_container)
        return fetched.data, url_filename(fetched.final_url) or "video"

    def analyze_file(
        self,
        clip: VideoSource | str,
        filename: str | None = None,
        *,
        line: CountingLine | None = None,
        sample_fps: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_frame: Callable[[FrameResult], None] | None = None,
        source: Origin = "upload",
        source_url: str | None = None,
    ) -> StoredVideo:
        """Analyse a clip now and keep it (or return it as stored, when it was analysed with these parameters).

        Args:
            clip: The clip's bytes, or its file (a path, read as it is decoded).
            filename: The name to keep; the path's name by default.
            line: A counting line, in the clip's pixels.
            sample_fps: Frames a second for the networks (``video_sample_fps`` by default).
            on_progress: Told the stage and the progress, 0 to 1.
            on_frame: Told each sampled frame's results as they come.
            source: How the clip came: ``"upload"``, ``"url"`` or ``"batch"``.
            source_url: The address it was fetched from.

        Raises:
            VideoRejected, VideoTooLarge, VideoTimedOut: not a clip we analyse; nothing was stored.
            ModelsNotReady: the networks did not load.
            StoreUnavailable, DatabaseUnavailable: nothing was stored; try again.
        """
        if isinstance(clip, str):
            clip = Path(clip)
        if isinstance(clip, Path) and not clip.is_file():
            raise PicMetricError(f"no such file: {clip.name}")
        name = clean_filename(filename) or (clip.name if isinstance(clip, Path) else None) or "video"
        source_clip: VideoSource = clip  # the clip, typed for the closures below
        options = ClipOptions(sample_fps=sample_fps or self.settings.video_sample_fps, line=line)
        deadline = Deadline(self.limits.deadline_s)
        # Every FFmpeg call runs on a thread waited for only until the deadline: one that never returns cannot
        # hold the job (video/watchdog.py).
        watch = DeadlineWatch(deadline)
        report = watch.quiet(on_progress or (lambda _stage, _progress: None))
        report("probing", 0.0)
        # A bad clip is refused before anything waits for the networks or runs them.
        watch.run(lambda: _checked(source_clip, self.limits, deadline), "probing")
        video_id = md5_of(clip)
        store = self.store()
        stored_row = store.find(video_id)
        if stored_row is not None and Parameters(options.sample_fps, line).matches(stored_row):
            stored = store.get(video_id)
            if stored is not None:
                report("done", 1.0)
                return stored
        report("waiting for the networks", 0.0)
        networks = self._loader.analyzer()
        with tempfile.TemporaryDirectory(prefix="picmetric-video-") as folder:
            annotated = Path(folder) / "annotated.mp4"
            analysed: AnalysedClip = watch.run(
                lambda: analyze_clip(
                    source_clip,
                    networks,
                    self.limits,
                    options,
                    annotated=annotated,
                    deadline=deadline,
                    on_frame=watch.quiet(on_frame) if on_frame is not None else None,
                    on_stage=report,
                ),
                "analysing",
            )
            report("storing", 0.98)
            return store.save(
                video_id,
                clip,
                filename=name,
                origin=source,
                source_url=source_url,
                clip=analysed,
                annotated=annotated,
            )

    def job(self, job_id: str) -> VideoJob | None:
        """A job's state now, or ``None`` for an unknown (or long forgotten) id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            return VideoJob(
                job_id=job.job_id,
                state=job.state,  # type: ignore[arg-type]
                filename=job.filename,
                progress=round(job.progress, 4),
                stage=job.stage,
                error=job.error,
                video_id=job.video_id,
                partial=tuple(job.partial),
            )

    # Stored clips ------------------------------------------------------------------------------------------

    def get(self, video_id: str) -> StoredVideo | None:
        """A stored clip with every sampled frame's results."""
        return self.store().get(video_id)

    def list(self, labels: Sequence[str] = (), limit: int = 50, offset: int = 0) -> list[StoredVideo]:
        """Stored clips, newest first, without their frames; with ``labels``, those with a track of any of them."""
        return self.store().list(labels, limit=limit, offset=offset)

    def delete(self, video_id: str) -> bool:
        """Delete a clip's row and every object kept for it. ``False`` when there was none."""
        return self.store().delete(video_id)

    def matching(self, query: HistoryQuery) -> list[str]:
        """The clips History's filters select, oldest first (what a delete by filters deletes with the photos)."""
        return self.store().matching(query)

    def read(self, key: str) -> bytes:
        """The bytes of one of a clip's objects (the page's player and downloads)."""
        return self.store().read(key)

    def tracks_csv(self, stored: StoredVideo) -> bytes:
        return exports.tracks_csv(stored)

    def frames_csv(self, stored: StoredVideo) -> bytes:
        return exports.frames_csv(stored)

    def document(self, stored: StoredVideo, links: dict[str, str | None] | None = None) -> dict[str, Any]:
        return exports.document(stored, links)

    def store(self) -> VideoStore:
        """The clips' store and database (the service's), opened on first use."""
        with self._store_lock:
            if self._store is None:
                service = self._service()
                self._store = VideoStore(service.engine, service.store)
            return self._store

    def close(self, wait: bool = True) -> None:
        """Stop taking jobs; with ``wait``, let running ones finish."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # Internals ---------------------------------------------------------------------------------------------

    def _new_job(self, filename: str) -> _Job:
        job = _Job(job_id="job_" + secrets.token_hex(8), filename=filename)
        with self._lock:
            self._jobs[job.job_id] = job
            while len(self._jobs) > KEPT_JOBS:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].state in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
        return job

    def _reporter(self, job: _Job) -> ProgressCallback:
        def report(stage: str, progress: float) -> None:
            with self._lock:
                job.stage, job.progress = stage, max(job.progress, progress)

        return report

    def _run_job(self, job: _Job, run: Callable[[], StoredVideo]) -> None:
        with self._lock:
            job.state = "running"
        try:
            stored = run()
        except PicMetricError as error:
            log.info("video job %s refused: %s", job.job_id, error)
            self._finish(job, error=client_message(error))
        except Exception:
            log.exception("video job %s failed", job.job_id)
            self._finish(job, error=FAILED_UNEXPECTEDLY)
        else:
            self._finish(job, video_id=stored.video_id)

    def _finish(self, job: _Job, *, video_id: str | None = None, error: str | None = None) -> None:
        with self._lock:
            job.state = "failed" if error else "done"
            job.error, job.video_id = error, video_id
            job.stage = "failed" if error else "done"
            if not error:
                job.progress = 1.0


def _checked(clip: VideoSource, limits: VideoLimits, deadline: Deadline) -> None:
    """Probe and scan a clip: refused here when it is not one we analyse (see :func:`probe`, :func:`scan`)."""
    scan(clip, probe(clip, limits, deadline), limits, deadline)


def md5_of(clip: VideoSource) -> str:
    """The md5 of a clip's bytes (a file read a megabyte at a time): its ``video_id``."""
    if isinstance(clip, bytes):
        return hashlib.md5(clip, usedforsecurity=False).hexdigest()
    digest = hashlib.md5(usedforsecurity=False)
    with clip.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
