"""The Ray Data stages of a batch, each a function of one block (a dict of column arrays).

read → (md5 + one query for which md5s are stored) → decode → analyse (actor pool) → store + record.
An item that fails a stage becomes a ``failed`` row with a message and rides along to be recorded;
an item seen before skips decoding and the networks. Only the store and record stage writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from picmetric_core.batch.videos import VIDEO, analyse_video, looks_like_video, video_jobs
from picmetric_core.config import Settings
from picmetric_core.errors import DatabaseUnavailable, PicMetricError, StoreUnavailable
from picmetric_core.intake import is_url
from picmetric_core.intake.images import DecodedImage, decode_for
from picmetric_core.results import Analysis, Signature

if TYPE_CHECKING:
    from picmetric_core.batch.jobs import JobStore
    from picmetric_core.lifecycle import ModelLoader
    from picmetric_core.runtime import Runtime
    from picmetric_core.service import PicMetricService, ToStore
    from picmetric_core.video.jobs import VideoJobs

log = logging.getLogger(__name__)

Block = dict[str, Any]
TODO = "todo"  # read and not stored yet: to decode, analyse and store
NO_PIXELS = np.zeros((0, 0, 3), np.uint8)
UNEXPECTED = "Unexpected error on this item; it has been logged on the worker."
# Failures of the infrastructure, not of the item: they stop the run (the job is marked failed) and the
# item is never recorded as failed, so a resumed job tries it again.
NOT_THE_ITEMS_FAULT = (StoreUnavailable, DatabaseUnavailable)


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:16]


def read_block(block: Block, *, settings: Settings, job_started: datetime) -> Block:
    """Read each item's bytes and md5; mark the ones already stored (no decode or inference for them).

    An item stored at or after ``job_started`` was stored by an earlier, interrupted run of this
    job, so it counts as new.
    """
    from picmetric_core.batch.sources import read_item

    items = [str(item) for item in block["item"]]
    data: list[bytes] = []
    md5s: list[str] = []
    names: list[str] = []  # what History names each item (a URL's after redirects)
    errors: list[str] = []  # "" for none: Ray Data turns a None in a string column into NaN
    for item in items:
        try:
            received = read_item(item, settings)
            data.append(received.data)
            md5s.append(hashlib.md5(received.data).hexdigest())
            names.append(received.filename or "")
            errors.append("")
        except NOT_THE_ITEMS_FAULT:
            raise
        except PicMetricError as error:
            data.append(b"")
            md5s.append("")
            names.append("")
            errors.append(str(error))
        except Exception:
            log.exception("reading %s failed", item)
            data.append(b"")
            md5s.append("")
            names.append("")
            errors.append(UNEXPECTED)
    stored = _jobs(settings).stored_since(md5 for md5 in md5s if md5)
    statuses = []
    for md5, error in zip(md5s, errors, strict=True):
        if error:
            statuses.append("failed")
        elif md5 in stored:
            statuses.append("new" if stored[md5] >= job_started else "seen")
        else:
            statuses.append(TODO)
    here = node_id()
    return {
        "item": items,
        "md5": md5s,
        "data": _objects(data),
        "filename": names,
        "status": statuses,
        "error": errors,
        "node": [here] * len(items),
    }


def decode_block(block: Block, *, settings: Settings) -> Block:
    """Decode the items still to analyse (limits included); a bad image becomes a failed item."""
    statuses = [str(status) for status in block["status"]]
    errors = [str(error) for error in block["error"]]
    pixels: list[np.ndarray] = []
    formats: list[str] = []
    for index, (status, data) in enumerate(zip(statuses, block["data"], strict=True)):
        image = None
        if status == TODO and looks_like_video(data):
            statuses[index] = VIDEO  # analysed whole by the actor (picmetric_core.batch.videos)
        elif status == TODO:
            try:
                image = decode_for(settings, bytes(data))
            except PicMetricError as error:
                statuses[index], errors[index] = "failed", str(error)
            except Exception:
                log.exception("decoding %s failed", block["item"][index])
                statuses[index], errors[index] = "failed", UNEXPECTED
        pixels.append(image.rgb if image is not None else NO_PIXELS)
        formats.append(image.format if image is not None else "")
    return {**block, "status": statuses, "error": errors, "rgb": _objects(pixels), "format": formats}


class AnalyzeActor:
    """One actor of the pool: loads the networks once, then runs ``analyze_many`` on each block's new images.

    The networks load on the first image to analyse, so a run where every image was seen before
    costs no model load.
    """

    def __init__(self, settings: Settings, batch_size: int) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.node = node_id()
        self.analyzer: Any = None
        self.videos: VideoJobs | None = None

    def __call__(self, block: Block) -> Block:
        todo = [i for i, status in enumerate(block["status"]) if status == TODO]
        clips = [i for i, status in enumerate(block["status"]) if status == VIDEO]
        images = [_decoded(block, i) for i in todo]
        if (images or clips) and self.analyzer is None:
            from picmetric_core.lifecycle import freeze_the_heap
            from picmetric_core.pipeline import get_analyzer

            self.analyzer = get_analyzer(self.settings)
            freeze_the_heap()
        analyses = self.analyzer.analyze_many(images, batch_size=self.batch_size) if images else []
        documents: list[str] = [""] * len(block["status"])
        inferred = [False] * len(block["status"])
        nodes = list(block["node"])
        for index, analysis in zip(todo, analyses, strict=True):
            signature = analysis.signature.to_dict() if analysis.signature is not None else None
            documents[index] = json.dumps({**analysis.to_dict(), "signature": signature}, default=_plain)
            inferred[index] = True
            nodes[index] = self.node
        statuses, errors, data = list(block["status"]), list(block["error"]), list(block["data"])
        for index in clips:
            item = str(block["item"][index])
            source_url = item if is_url(item) else None
            outcome = analyse_video(self._videos(), bytes(data[index]), _clip_name(block, index), source_url)
            statuses[index], errors[index] = outcome.status, outcome.error
            inferred[index], nodes[index] = outcome.status != "failed", self.node
            data[index] = b""  # stored already: the clip's bytes need not travel to the store stage
        return {
            **block,
            "status": statuses,
            "error": errors,
            "data": _objects(data),
            "analysis": documents,
            "inferred": inferred,
            "node": nodes,
        }

    def _videos(self) -> VideoJobs:
        if self.videos is None:
            self.videos = video_jobs(self.settings, _service(self.settings), self.analyzer)
        return self.videos


def store_block(block: Block, *, settings: Settings, job_id: int) -> Block:
    """Store the block's analysed images through the service (objects, then all their rows in one
    transaction), then record every item. No overlay is drawn: links and exports draw them when asked.

    An item whose analysis cannot be read or whose row the database refuses fails alone; the rest of
    the block is stored. Only small columns leave this stage: the driver sees item, md5, status, error,
    node, inferred.
    """
    from picmetric_core.batch.jobs import ItemRecord

    statuses = [str(status) for status in block["status"]]
    errors = [str(error) for error in block["error"]]
    near = [False] * len(statuses)
    todo: list[int] = []
    to_store: list[ToStore] = []
    for index, document in enumerate(block["analysis"]):
        if statuses[index] != TODO:
            continue
        try:
            to_store.append(_to_store(block, index, str(document)))
            todo.append(index)
        except Exception:
            log.exception("reading the analysis of %s failed", block["item"][index])
            statuses[index], errors[index] = "failed", UNEXPECTED
    outcomes = _service(settings).store_analyses(to_store) if to_store else []
    for index, outcome in zip(todo, outcomes, strict=True):
        if isinstance(outcome, NOT_THE_ITEMS_FAULT):
            raise outcome
        if isinstance(outcome, Exception):
            log.error("storing %s failed: %r", block["item"][index], outcome)
            statuses[index], errors[index] = "failed", UNEXPECTED
            continue
        statuses[index] = "seen" if outcome.seen_before else "new"
        near[index] = not outcome.seen_before and bool(outcome.near_duplicates)
    records = [
        ItemRecord(str(item), str(md5) or None, status, str(error) or None, str(node), near_duplicate)
        for item, md5, status, error, node, near_duplicate in zip(
            block["item"], block["md5"], statuses, errors, block["node"], near, strict=True
        )
    ]
    _jobs(settings).record(job_id, records)
    return {
        "item": block["item"],
        "md5": block["md5"],
        "status": statuses,
        "error": errors,
        "node": block["node"],
        "inferred": block["inferred"],
    }


def _to_store(block: Block, index: int, document: str) -> ToStore:
    """What the store stage hands the service for one analysed item of the block."""
    from picmetric_core.service import ToStore

    data = json.loads(document)
    analysis = Analysis.from_dict(data)
    if data.get("signature") is not None:  # what finds near-duplicates and look-alikes
        analysis = replace(analysis, signature=Signature.from_dict(data["signature"]))
    item = str(block["item"][index])
    return ToStore(
        _decoded(block, index),
        analysis,
        source="url" if is_url(item) else "upload",
        filename=str(block["filename"][index]) or None,
        source_url=item if is_url(item) else None,
    )


def _clip_name(block: Block, index: int) -> str:
    from picmetric_core.batch.sources import item_filename

    return str(block["filename"][index]) or item_filename(str(block["item"][index]))


def _decoded(block: Block, index: int) -> DecodedImage:
    from picmetric_core.intake.images import CONTENT_TYPES

    image_format = str(block["format"][index])
    return DecodedImage(
        data=bytes(block["data"][index]),
        rgb=np.asarray(block["rgb"][index]),
        md5=str(block["md5"][index]),
        format=image_format,
        content_type=CONTENT_TYPES[image_format],
    )


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array (numpy would otherwise stack equal-shaped images into one 4-D array)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class _NoNetworks:
    """The store stage's analyzer: analyses always come from the actor pool."""

    models = ()

    def analyze(self, image: DecodedImage, on_stage: Any = None) -> Analysis:
        raise RuntimeError("the store stage never runs the networks")


def _no_networks(settings: Settings) -> ModelLoader:
    from picmetric_core.lifecycle import ModelLoader

    return ModelLoader(settings, load=lambda _settings: _NoNetworks())


def _runtime(settings: Settings) -> Runtime:
    """The worker process's runtime (one service and database engine per process and settings: Ray reuses
    worker processes across blocks, and opening a service upgrades the schema)."""
    from picmetric_core.runtime import shared_runtime

    return shared_runtime(settings, loader_factory=_no_networks)


def _service(settings: Settings) -> PicMetricService:
    return _runtime(settings).service()


def _jobs(settings: Settings) -> JobStore:
    return _runtime(settings).jobs()
