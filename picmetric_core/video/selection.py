"""Which stored clips a History question selects: what ``picmetric delete`` (its filters, ``--older-than``,
``--retention``, ``--all``) and ``POST /v1/analyses/delete`` delete along with the photos.

A clip is judged by the filters it has an answer to: when it was analysed (``since``, ``until``), its file name
(any part, any case), its md5 (its ``video_id``, or the start of it) and a detector label (a track of that
class whose best score reaches ``min_score``). A filter a clip has no answer to (faces, a classifier label, a
batch, similar photos, uniqueness on the map) selects no clip at all: a delete never goes wider than what was
asked.

Example:
    >>> from picmetric_core.history import HistoryQuery
    >>> judged(HistoryQuery(label="dog")), judged(HistoryQuery(has_faces=True))
    (True, False)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, exists

from picmetric_core.store.history import date_name_and_md5_conditions
from picmetric_core.store.orm import VideoRow, VideoTrackRow

if TYPE_CHECKING:
    from picmetric_core.history import HistoryQuery

PHOTO_ONLY_FILTERS = (
    "has_faces",
    "min_faces",
    "max_faces",
    "similar_to",
    "batch",
    "min_uniqueness",
    "max_uniqueness",
)
"""History filters a clip has no answer to: a query with any of them selects no clip."""


def judged(query: HistoryQuery) -> bool:
    """Whether clips can be judged by every filter of ``query`` (else it selects none)."""
    if query.label_kind == "classifier":  # a clip keeps its classifier's results per frame, not as rows
        return False
    return all(getattr(query, name) is None for name in PHOTO_ONLY_FILTERS)


def conditions(query: HistoryQuery) -> list[ColumnElement[bool]]:
    """The ``WHERE`` conditions on :class:`VideoRow` of a query that :func:`judged` accepts (paging ignored)."""
    found = date_name_and_md5_conditions(query, VideoRow)
    if query.label:
        found.append(
            exists().where(
                VideoTrackRow.video_id == VideoRow.id,
                VideoTrackRow.label == query.label,
                VideoTrackRow.best_score >= query.min_score,
            )
        )
    return found
