"""The Video page's parts: a clip in (upload or URL), its poster with the counting line, the analysis's
progress with what was found so far, and the stored result (annotated clip, timeline, tracks, counts).

Analyses run in the server's background (``Runtime.videos()``); the page only polls the job, so a
viewer can leave and come back (``?video=<id>`` opens a stored one).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from picmetric_core.errors import PicMetricError
from picmetric_core.intake.images import format_size
from picmetric_core.labels import percent
from picmetric_core.results import ModelInfo
from picmetric_core.video.results import CountingLine, StoredVideo, VideoInfo, VideoJob
from picmetric_core.views import to_json
from picmetric_ui import plain, resources, video_cards
from picmetric_ui.components import ROLE_TITLES
from picmetric_ui.video_cards import videos
from picmetric_ui.video_charts import counts_figure, timeline_figure
from picmetric_ui.video_data import (
    clock,
    count_rows,
    duration_text,
    info_text,
    jpeg_data_uri,
    seek_time,
    selected_row,
    summary_text,
    track_rows,
    tracks_in_table_order,
)

log = logging.getLogger(__name__)

VIDEO_TYPES = ["mp4", "mov", "webm", "mkv", "avi"]
MAX_SAMPLE_FPS = 30
POLL_S = 1.0
RECENT = 6
CHART_CONFIG = {"displayModeBar": False}
_MB = 1024 * 1024  # Streamlit's "MB"
UNEXPECTED_MESSAGE = "Something went wrong with this clip; it was logged. Try again, or try another clip."
STAGE_TEXT = {
    "queued": "waiting for the analyses before it",
    "waiting for the networks": "waiting for the networks to load (once per server)",
    "fetching": "downloading the clip",
    "probing": "reading the clip",
    "analysing": "finding and following objects and faces",
    "encoding": "drawing the annotated clip",
    "storing": "saving to the history",
}
_JOB = "_video_job"  # the running analysis's job id
_SEEK = "_video_seek_s"  # where the player starts, set by a click on the timeline or a track
_FETCHED = "_video_fetched"  # the last URL's clip, or why it could not be fetched
_CLIPS = "_video_clips"  # what probing each clip of this session gave: (info, poster) or a message


@dataclass(frozen=True)
class Clip:
    """A clip the viewer gave: an upload, or what a URL gave."""

    key: str
    name: str
    data: bytes
    url: str | None = None


@dataclass(frozen=True)
class Probed:
    """What the page knows of an uploaded clip before it is analysed."""

    info: VideoInfo | None = None
    poster: np.ndarray | None = None
    error: str | None = None


def user_message(error: Exception) -> str:
    """A message fit for the viewer: a PicMetric error's own, else a generic one (the error is logged)."""
    if isinstance(error, PicMetricError):
        return str(error)
    log.exception("video page failure", exc_info=error)
    return UNEXPECTED_MESSAGE


def upload_limit_mb() -> int:
    """The upload box's limit in Streamlit megabytes: the video limit, unless Streamlit was started with less."""
    limit = min(resources.settings().video_max_bytes, int(st.get_option("server.maxUploadSize")) * _MB)
    return max(1, math.ceil(limit / _MB))


def limits_text() -> str:
    current = resources.settings()
    return (
        f"Formats: MP4, MOV, WebM, MKV or AVI. Up to {format_size(upload_limit_mb() * _MB)} and "
        f"{duration_text(current.video_max_seconds)} per clip."
    )


def clip_intake_ui() -> Clip | None:
    """The upload box and the URL field; the clip they give (an upload wins over a URL), if any. A URL's
    clip is fetched here, once, so its poster can take a counting line like an upload's."""
    upload_column, url_column = st.columns([3, 2])
    with upload_column:
        upload = st.file_uploader(
            "Video clip",
            type=VIDEO_TYPES,
            key="video_upload",
            help="Drag and drop an MP4, MOV, WebM, MKV or AVI clip.",
            max_upload_size=upload_limit_mb(),
        )
        st.caption(limits_text())
    with url_column:
        url = st.text_input(
            "Or a video URL",
            key="video_url",
            placeholder="https://example.com/clip.mp4",
            help="Press Enter to fetch it.",
        ).strip()
    if upload is not None:
        return Clip(key=f"upload:{upload.file_id}", name=upload.name, data=upload.getvalue())
    if url:
        return fetched(url)
    return None


def fetched(url: str) -> Clip | None:
    """The clip at ``url`` (fetched under the same rules as photos' URLs; the last one is kept for the
    session), or ``None`` after a message that says why it could not be."""
    kept: dict[str, Clip | str] = st.session_state.setdefault(_FETCHED, {})
    if url not in kept:
        kept.clear()
        with st.spinner("Fetching the clip"):
            try:
                data, name = videos().fetch(url)
                kept[url] = Clip(key=f"url:{url}", name=name, data=data, url=url)
            except Exception as error:
                kept[url] = user_message(error)
    found = kept[url]
    if isinstance(found, str):
        st.error(found, icon=":material/error:")
        return None
    return found


def probed(clip: Clip) -> Probed:
    """The clip's declared facts and poster frame, or why it is refused (worked out once per clip)."""
    known: dict[str, Probed] = st.session_state.setdefault(_CLIPS, {})
    if clip.key not in known:
        try:
            jobs = videos()
            known[clip.key] = Probed(info=jobs.probe(clip.data), poster=jobs.poster(clip.data))
        except Exception as error:
            known[clip.key] = Probed(error=user_message(error))
    return known[clip.key]


def sample_rate_ui(info: VideoInfo | None) -> float:
    """How many frames per second to analyse (more finds fast objects, fewer finishes sooner); it starts
    at ``PICMETRIC_VIDEO_SAMPLE_FPS``."""
    top = MAX_SAMPLE_FPS if info is None else max(1, min(MAX_SAMPLE_FPS, round(info.fps)))
    default = round(resources.settings().video_sample_fps)
    return float(
        st.slider(
            "Frames analysed per second",
            1,
            top,
            min(max(default, 1), top),
            key="video_sample_fps",
            help="Sampled evenly through the clip. More follows fast objects better; fewer finishes sooner.",
        )
    )


def start_analysis(clip: Clip, line: CountingLine | None, sample_fps: float) -> None:
    """Submit the clip in the background and remember its job for this session."""
    try:
        jobs = videos()
        if clip.url is None:
            job_id = jobs.submit(clip.data, clip.name, line=line, sample_fps=sample_fps)
        else:
            job_id = jobs.submit(
                clip.data, clip.name, line=line, sample_fps=sample_fps, source="url", source_url=clip.url
            )
    except Exception as error:
        st.error(user_message(error), icon=":material/error:")
        return
    st.session_state[_JOB] = job_id
    st.rerun()


def opened_video() -> str | None:
    """The stored clip the link opens (``?video=<id>``), written back to the address bar: a page link
    carries it into the first run only, and the address bar is what later runs and a shared link read."""
    video_id = (st.query_params.get("video") or "").strip()
    if video_id:
        st.query_params["video"] = video_id
    return video_id or None


def close_result() -> None:
    """Back to the upload box from a stored clip's result."""
    st.query_params.clear()
    st.session_state.pop(_SEEK, None)


def running_job() -> str | None:
    return st.session_state.get(_JOB)


def stage_text(job: VideoJob) -> str:
    """The progress bar's text, e.g. "finding and following objects and faces · 40%"."""
    return f"{STAGE_TEXT.get(job.stage, job.stage)} · {percent(job.progress)}"


def job_progress(job_id: str) -> None:
    """The running analysis: a progress bar with its stage and the timeline of the frames done so far,
    redrawn every second; once done, the page opens the stored result."""
    st.fragment(run_every=POLL_S)(_job_progress_body)(job_id)


def _job_progress_body(job_id: str) -> None:
    job = videos().job(job_id)
    if job is None:
        st.session_state.pop(_JOB, None)
        st.warning("This analysis is no longer running here (the server restarted?). Start it again.")
        return
    if job.state == "failed":
        st.session_state.pop(_JOB, None)
        st.error(job.error or UNEXPECTED_MESSAGE, icon=":material/error:")
        return
    if job.state == "done" and job.video_id:
        st.session_state.pop(_JOB, None)
        video_cards.clear()
        st.query_params["video"] = job.video_id
        st.rerun(scope="app")
    plain.line(f"Analysing {job.filename}", bold=True)
    st.progress(min(max(job.progress, 0.0), 1.0), text=stage_text(job))
    if job.partial:
        duration = max(f.time_s for f in job.partial)
        figure = timeline_figure(job.partial, duration, f"Seen so far ({len(job.partial)} frames)")
        st.plotly_chart(figure, key="video-partial-timeline", config=CHART_CONFIG)


def stored_video(video_id: str) -> StoredVideo | None:
    try:
        return videos().get(video_id)
    except Exception as error:
        st.error(user_message(error), icon=":material/error:")
        return None


@st.cache_data(ttl=600, max_entries=4, show_spinner=False)
def _object(settings_key: str, key: str) -> bytes:
    return videos().read(key)


def stored_bytes(key: str) -> bytes:
    """An object of a stored video (the annotated clip, a crop), read once per server for a while."""
    return _object(resources.settings_key(resources.settings()), key)


@st.cache_data(ttl=600, max_entries=2048, show_spinner=False)
def _crop_uri(settings_key: str, key: str) -> str | None:
    try:
        return jpeg_data_uri(videos().read(key))
    except Exception:  # a crop that cannot be read leaves its cell empty
        log.exception("crop %s could not be read", key)
        return None


def crop_uris(stored: StoredVideo) -> dict[str, str]:
    """Each track's best crop as a data URI for the table's image column."""
    settings_key = resources.settings_key(resources.settings())
    keys = [t.crop_key for t in stored.analysis.tracks if t.crop_key]
    return {key: uri for key in keys if (uri := _crop_uri(settings_key, key)) is not None}


def seek_to(seconds: float | None) -> None:
    if seconds is not None:
        st.session_state[_SEEK] = max(0.0, seconds)


def _seek_from_timeline() -> None:
    seek_to(seek_time(st.session_state.get("video-timeline")))


def _seek_from_tracks(stored: StoredVideo) -> None:
    row = selected_row(st.session_state.get("video-tracks"))
    if row is not None:
        seek_to(tracks_in_table_order(stored.analysis.tracks)[row].first_seen_s)


def annotated_player(stored: StoredVideo) -> None:
    """The annotated clip (boxes, track ids, trails, the counting line), from where the viewer last clicked."""
    key = stored.keys.annotated
    if key is None:
        st.info("The annotated clip is not ready for this video.", icon=":material/movie:")
        return
    start = st.session_state.get(_SEEK, 0.0)
    st.video(stored_bytes(key), format="video/mp4", start_time=start)
    st.caption(f"From {clock(start)} · click a point on the timeline or a row of the tracks to jump there.")


def line_counts(stored: StoredVideo) -> None:
    """The counting line's in and out counts per class (nothing when the clip had no line)."""
    analysis = stored.analysis
    if analysis.line is None:
        st.caption("No counting line was set for this clip.")
        return
    st.markdown("**Counting line**")
    if not analysis.counts:
        st.caption("Nothing crossed the line.")
        return
    st.dataframe(count_rows(analysis.counts), hide_index=True, width="stretch")


def downloads(stored: StoredVideo) -> None:
    """The annotated clip, the tracks and per-frame detections as CSV, and the whole result as JSON."""
    stem = Path(stored.filename or stored.video_id).stem
    jobs = videos()
    files: list[tuple[str, Callable[[], bytes | str], str, str, str]] = [
        ("Tracks (CSV)", lambda: jobs.tracks_csv(stored), f"{stem}.tracks.csv", "text/csv", "tracks"),
        ("Frames (CSV)", lambda: jobs.frames_csv(stored), f"{stem}.frames.csv", "text/csv", "frames"),
        (
            "Result (JSON)",
            lambda: to_json(jobs.document(stored), indent=2),
            f"{stem}.video.json",
            "application/json",
            "json",
        ),
    ]
    if stored.keys.annotated:
        annotated = stored.keys.annotated
        files.insert(
            0, ("Annotated clip (MP4)", lambda: stored_bytes(annotated), f"{stem}.annotated.mp4", "video/mp4", "mp4")
        )
    for start in range(0, len(files), 2):  # rows of two, so a phone lists them in the same order
        for column, (label, data, file_name, mime, suffix) in zip(
            st.columns(2), files[start : start + 2], strict=False
        ):
            column.download_button(
                label,
                data,
                file_name,
                mime,
                key=f"video-download-{suffix}",
                on_click="ignore",
                width="stretch",
                icon=":material/download:",
            )


def timeline_chart(stored: StoredVideo) -> None:
    """Objects per class and faces over time; a click on a point moves the player there."""
    analysis = stored.analysis
    st.plotly_chart(
        timeline_figure(analysis.frames, analysis.info.duration_s),
        key="video-timeline",
        on_select=_seek_from_timeline,
        selection_mode="points",
        config=CHART_CONFIG,
    )


def counts_chart(stored: StoredVideo) -> None:
    analysis = stored.analysis
    if analysis.line is None or not analysis.crossings:
        return
    ids = {t.label: t.class_id for t in analysis.tracks}
    st.plotly_chart(
        counts_figure(analysis.crossings, ids, analysis.info.duration_s), key="video-counts", config=CHART_CONFIG
    )


def track_table(stored: StoredVideo) -> None:
    """Every track: its best crop, class, when it was seen and its best score; a row click seeks there."""
    tracks = stored.analysis.tracks
    st.subheader(f"Tracks ({len(tracks)})")
    if not tracks:
        st.caption("No object was followed through this clip.")
        return
    st.dataframe(
        track_rows(tracks, crop_uris(stored)),
        hide_index=True,
        width="stretch",
        key="video-tracks",
        on_select=lambda: _seek_from_tracks(stored),
        selection_mode="single-row",
        row_height=64,
        column_config={
            "Crop": st.column_config.ImageColumn("Crop", width="small"),
            "Seen": st.column_config.TextColumn("Seen (from–to)"),
            "Best score": st.column_config.ProgressColumn("Best score", min_value=0, max_value=100, format="%d%%"),
        },
    )


def models_used(models: tuple[ModelInfo, ...]) -> None:
    """Which networks and weights ran on the clip, as the sidebar's Models panel says it."""
    with st.expander("Models", icon=":material/memory:"):
        for info in models:
            kind = "full weights" if info.full else "offline stand-in"
            ran = f"  \nruns on {info.runtime}" if info.runtime else ""
            st.markdown(f"**{ROLE_TITLES.get(info.role, info.role)}:** {info.name}  \n{kind} · `{info.weights}`{ran}")


def result_view(stored: StoredVideo) -> None:
    """A stored clip, top to bottom: what it is, the annotated player beside the counts and downloads,
    the timeline, the line's totals over time, the tracks and the models that ran."""
    analysis = stored.analysis
    plain.heading(stored.filename or stored.video_id, level=2)
    origin = stored.source_url or stored.source
    plain.line(
        f"Analysed {stored.created_at[:16].replace('T', ' ')} UTC · from {origin} · {info_text(analysis.info)}",
        muted=True,
    )
    st.markdown(f":material/insights: {summary_text(analysis)}")
    player, side = st.columns([3, 2], gap="medium")
    with player:
        annotated_player(stored)
    with side:
        line_counts(stored)
        downloads(stored)
    timeline_chart(stored)
    counts_chart(stored)
    track_table(stored)
    models_used(analysis.models)


def recent_videos() -> None:
    """The latest stored clips, to open again."""
    found = video_cards.listed(limit=RECENT)
    if found:
        st.subheader("Recent videos")
        video_cards.video_cards(found, key="recent-videos")
