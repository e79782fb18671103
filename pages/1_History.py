"""PicMetric — History: every analysis, searchable, with a shareable detail view and side-by-side compare;
one analysis or the compare picks can be deleted, after a confirmation that says what goes.

Links: ``?md5=…`` opens one analysis, ``?compare=md5,md5,…`` two to four side by side; both may carry the
thresholds they were viewed at (``&conf=…&iou=…&faceconf=…``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import streamlit as st

from picmetric_core import exports
from picmetric_core.errors import FilterRejected, PicMetricError
from picmetric_core.filters import DisplayThresholds, shown
from picmetric_core.history import LABEL_MIN_SCORE, HistoryFilters, HistoryQuery
from picmetric_core.intake.names import MAX_FILENAME_CHARS
from picmetric_core.labels import percent
from picmetric_core.submission import Submission
from picmetric_core.text_filters import MAX_FILTER_CHARS, check_filter_text
from picmetric_ui import charts, components, history_data, plain, resources, thumbnails
from picmetric_ui.history_map import UNIQUENESS_DEFAULTS, map_section, on_the_map, uniqueness_notes, uniqueness_ui
from picmetric_ui.history_map import clear as clear_map
from picmetric_ui.page import page_setup
from picmetric_ui.result import overlays_for, result_view, stored_rgb, summary_text
from picmetric_ui.thumbnails import card_thumbnail
from picmetric_ui.video_cards import history_videos

page_setup("History")

PAGE_SIZE = 12
GRID_COLUMNS = 4
MAX_COMPARE = 4
MORE_LIKE_THIS = 12
SIMILAR_CARD_PX = 170
_MD5_START = re.compile(r"[0-9a-fA-F]{6,32}")
FILTER_DEFAULTS = {
    "label": None,
    "min_score": LABEL_MIN_SCORE,
    "faces": "Any",
    "dates": (),
    "search": "",
    **UNIQUENESS_DEFAULTS,
}
# The filters a gallery link may carry (``?batch=7``, ``?similar_to=<md5>``) and what each must be. (A comment:
# Streamlit would draw a bare string on the page.)
LINK_FILTERS = {"batch": "a batch job id", "similar_to": "the md5 of a stored photo"}
GALLERY_STATE = "_gallery_state"  # the filters and page, kept while a detail or compare view is open
COMPARE = "_compare"
CONFIRMING = "_confirming_delete"  # the md5s a delete confirmation is open for
DELETED = "_deleted"  # what the last delete removed, said once in the gallery
SESSION_RENDERINGS = ("_decoded_cache", "_overlay_cache")  # this session's decoded photos and overlays

for name, default in FILTER_DEFAULTS.items():
    st.session_state.setdefault(name, default)
chosen: list[str] = st.session_state.setdefault(COMPARE, [])


def leave_gallery(**params: str) -> None:
    """Keep the gallery's filters and page (its widgets are not drawn while another view is open)."""
    st.session_state[GALLERY_STATE] = {
        key: st.session_state[key] for key in (*FILTER_DEFAULTS, "page") if key in st.session_state
    }
    st.query_params.update(params)


def back_to_gallery() -> None:
    st.session_state.update(st.session_state.pop(GALLERY_STATE, {}))
    st.query_params.clear()


def back_button() -> None:
    st.button("Back to the gallery", icon=":material/arrow_back:", on_click=back_to_gallery)


def share_thresholds(thresholds: DisplayThresholds) -> None:
    """The address bar's link opens this view at these thresholds for whoever it is shared with."""
    for param, value in components.threshold_params(thresholds).items():
        if st.query_params.get(param) != value:
            st.query_params[param] = value


def detail_view(md5: str, thresholds: DisplayThresholds) -> None:
    """One stored analysis, drawn with the Analyze page's components."""
    back_button()
    submission = resources.service().get(md5)
    if submission is None:
        st.warning("No analysis with this md5.", icon=":material/search_off:")
        return
    share_thresholds(thresholds)
    record = submission.record
    plain.heading(record.filename or record.md5, level=1)
    origin = record.source_url or ("the live camera" if record.source == "live" else "upload")
    plain.line(
        f"Analysed {record.created_at:%d %b %Y at %H:%M} UTC · from {origin} · {record.width}×{record.height} · "
        f"{record.content_type} · md5 {record.md5}",
        muted=True,
    )
    delete_button([md5], "Delete", key="delete-detail")
    with st.container(key="detail-result"):
        result_view(submission, stored_rgb(submission), thresholds, key="detail")
    more_like_this(md5, thresholds)
    on_the_map(md5)


def compare_view(md5s: list[str], thresholds: DisplayThresholds) -> None:
    """Two to four analyses side by side: name, summary line and the overlay that shows most."""
    back_button()
    share_thresholds(thresholds)
    st.title("Compare")
    service = resources.service()
    found = [s for s in (service.get(md5) for md5 in md5s[:MAX_COMPARE]) if s is not None]
    if len(found) < 2:
        st.warning("Pick two to four analyses in the gallery to compare them.", icon=":material/compare:")
        return
    delete_button([s.record.md5 for s in found], f"Delete these {len(found)}", key="delete-compared")
    for column, submission in zip(st.columns(len(found)), found, strict=True):
        with column, st.container(border=True):
            record, analysis = submission.record, submission.analysis
            plain.line(record.filename or record.md5, bold=True)
            plain.line(f"{record.created_at:%d %b %Y %H:%M} UTC · {record.width}×{record.height}", muted=True)
            rgb = stored_rgb(submission)
            visible = shown(analysis, thresholds)
            overlays = overlays_for(rgb, analysis, thresholds)
            st.image(overlays.detections_jpeg, caption="Objects", width="stretch")
            if visible.faces:
                st.image(overlays.faces_jpeg, caption="Faces", width="stretch")
            st.markdown(f":material/insights: {summary_text(analysis, visible)}")
            for top in analysis.classifications[:3]:
                st.progress(top.score, text=f"{top.label} {percent(top.score)}")


def delete_button(md5s: list[str], label: str, key: str, into: Any = st) -> None:
    """Opens the delete confirmation for ``md5s`` (it stays open across reruns until confirmed or dismissed)."""
    into.button(
        label,
        icon=":material/delete:",
        key=key,
        on_click=ask_to_delete,
        args=(list(md5s),),
        width="stretch" if into is not st else "content",
    )


def ask_to_delete(md5s: list[str]) -> None:
    st.session_state[CONFIRMING] = md5s


def cancel_delete() -> None:
    st.session_state.pop(CONFIRMING, None)


@st.dialog("Delete for good?", on_dismiss=cancel_delete)
def confirm_delete(submissions: list[Submission], thresholds: DisplayThresholds) -> None:
    """Says what goes (the photos by name, their images and results), then deletes them when confirmed."""
    photos = "this photo" if len(submissions) == 1 else f"these {len(submissions)} photos"
    st.markdown(f"Deleting {photos} removes from the store and the database:")
    with st.container(border=True):
        for submission in submissions:
            record, analysis = submission.record, submission.analysis
            plain.line(record.filename or record.md5, bold=True)
            plain.line(f"{summary_text(analysis, shown(analysis, thresholds))} · md5 {record.md5}", muted=True)
    faces = sum(len(s.analysis.faces) for s in submissions)
    located = f"the {faces} face{'s' if faces != 1 else ''} located" if faces else "faces"
    originals = "the original photo and its thumbnail" if len(submissions) == 1 else "the originals and thumbnails"
    st.markdown(
        f"- {originals}\n"
        "- the objects and faces overlays\n"
        f"- the results: classes, objects and {located}, with what “more like this” knows of them"
    )
    st.caption("Links to what goes stop working, everywhere. This cannot be undone.")
    delete, cancel = st.columns(2)
    if delete.button("Delete", type="primary", icon=":material/delete:", key="delete-confirm", width="stretch"):
        try:
            result = resources.service().delete([s.record.md5 for s in submissions])
        except PicMetricError as error:
            st.error(str(error), icon=":material/error:")
            return
        cancel_delete()
        forget(result.deleted)
        names = [s.record.filename or s.record.md5 for s in submissions if s.record.md5 in result.deleted]
        st.session_state[DELETED] = names
        back_to_gallery()
        st.rerun()
    if cancel.button("Cancel", key="delete-cancel", width="stretch"):
        cancel_delete()
        st.rerun()


def delete_confirmation(thresholds: DisplayThresholds) -> None:
    """The confirmation a delete button opened, drawn over whichever view is shown."""
    md5s = st.session_state.get(CONFIRMING)
    if not md5s:
        return
    found = [s for s in (resources.service().get(md5) for md5 in md5s) if s is not None]
    if found:
        confirm_delete(found, thresholds)
    else:  # deleted elsewhere meanwhile
        cancel_delete()


def forget(md5s: tuple[str, ...]) -> None:
    """After a delete: no cached read, thumbnail, decoded photo or overlay of this session shows them again."""
    history_data.clear()
    thumbnails.clear()
    clear_map()
    for md5 in md5s:
        if md5 in chosen:
            chosen.remove(md5)
    for name in SESSION_RENDERINGS:
        st.session_state.pop(name, None)


def deleted_notice() -> None:
    """Says once, back in the gallery, what the last delete removed."""
    names = st.session_state.pop(DELETED, None)
    if names:
        what = f"{names[0]} and everything kept for it"
        if len(names) > 1:
            what = f"{len(names)} photos and everything kept for them"
        st.success(f"Deleted {what}.", icon=":material/delete:")


def usable_text(name: str, text: str, max_chars: int = MAX_FILTER_CHARS) -> str:
    """``text`` if it is fit to filter by; else "" after a warning that says why it is ignored."""
    try:
        return check_filter_text(name, text, max_chars=max_chars)
    except FilterRejected as error:
        st.warning(f"{error} It is ignored.", icon=":material/warning:")
        return ""


def link_filters() -> dict[str, Any]:
    """The filters of the page's link, each checked as the API checks it; one that fails is ignored with a warning."""
    found: dict[str, Any] = {}
    for name, what in LINK_FILTERS.items():
        if not (text := st.query_params.get(name) or ""):
            continue
        try:
            checked = HistoryFilters.model_validate({name: text})
            checked.query()
        except ValueError:  # pydantic's ValidationError and FilterRejected alike
            st.warning(f"The link's {name} is not {what}. It is ignored.", icon=":material/warning:")
            continue
        found[name] = getattr(checked, name)
    return found


def filters_ui(thresholds: DisplayThresholds) -> HistoryQuery:
    """The gallery's filters, read top to bottom as a query."""
    suggestions = [c.label for c in history_data.label_frequencies("detector", 50)]
    suggestions += [c.label for c in history_data.label_frequencies("classifier", 50) if c.label not in suggestions]
    label_col, score_col, faces_col = st.columns([3, 2, 2])
    dates_col, search_col = st.columns([3, 4])
    label = label_col.selectbox(
        "Label",
        suggestions,
        index=None,
        key="label",
        placeholder="Any label",
        accept_new_options=True,
        help="An ImageNet class or a COCO object; the most frequent come first.",
    )
    min_score = score_col.slider(
        "Minimum confidence",
        0.0,
        1.0,
        step=0.05,
        key="min_score",
        disabled=not label,
        help="How sure the network must be that the image shows the label.",
    )
    faces = faces_col.selectbox("Faces", ["Any", "With faces", "Without faces"], key="faces")
    dates = dates_col.date_input("Analysed between", key="dates", format="YYYY-MM-DD")
    search = search_col.text_input("File name or md5", key="search", placeholder="dog.jpg or 4f055f…").strip()
    by_uniqueness = uniqueness_ui()
    label = usable_text("label filter", label or "")
    search = usable_text("file name or md5 filter", search, MAX_FILENAME_CHARS)
    since = until = None
    if isinstance(dates, tuple | list) and len(dates) >= 1:
        since = datetime.combine(dates[0], time(), tzinfo=UTC)
        until = datetime.combine(dates[-1], time(), tzinfo=UTC) + timedelta(days=1)
    is_md5 = bool(_MD5_START.fullmatch(search))
    filters = HistoryFilters(
        label=label or None,
        min_score=min_score if label else None,
        has_faces={"Any": None, "With faces": True, "Without faces": False}[faces],
        since=since,
        until=until,
        filename=None if is_md5 or not search else search,
        md5=search if is_md5 else None,
        min_uniqueness=by_uniqueness.min_uniqueness,
        max_uniqueness=by_uniqueness.max_uniqueness,
        **link_filters(),
    )
    return filters.query(
        min_face_score=thresholds.min_face_score,
        sort=by_uniqueness.sort,
        limit=PAGE_SIZE,
        page=st.session_state.get("page", 1),
    )


def toggle_compare(md5: str) -> None:
    """Follows the card's Compare box by its value, not by flipping: after a rerun cut short (a slider moved
    twice), Streamlit calls this again for boxes nobody touched, which picked four photos out of nowhere."""
    ticked = st.session_state.get(f"compare-{md5}", False)
    if not ticked and md5 in chosen:
        chosen.remove(md5)
    elif ticked and md5 not in chosen and len(chosen) < MAX_COMPARE:
        chosen.append(md5)


def thumbnail_card(submission: Submission, thresholds: DisplayThresholds, uniqueness: str | None = None) -> None:
    """A card of fixed shape: a 4:3 thumbnail, the full file name (wrapped), when, what was found (and, when
    the gallery is sorted or filtered by it, the photo's uniqueness)."""
    record, analysis = submission.record, submission.analysis
    st.image(card_thumbnail(record.keys.thumbnail), width="stretch")
    plain.line(record.filename or record.md5[:12], bold=True)
    found = summary_text(analysis, shown(analysis, thresholds))
    plain.line(f"{record.created_at:%d %b %Y %H:%M} · {found}" + (f" · {uniqueness}" if uniqueness else ""), muted=True)
    st.button(
        "Open",
        key=f"open-{record.md5}",
        on_click=leave_gallery,
        kwargs={"md5": record.md5},
        icon=":material/open_in_full:",
        width="stretch",
    )
    st.checkbox(
        "Compare",
        value=record.md5 in chosen,
        key=f"compare-{record.md5}",
        on_change=toggle_compare,
        args=(record.md5,),
        disabled=record.md5 not in chosen and len(chosen) >= MAX_COMPARE,
    )


def compare_bar() -> None:
    if not chosen:
        return
    text, action, delete, clear = st.columns([4, 2, 1, 1], vertical_alignment="center")
    text.caption(f"{len(chosen)} of up to {MAX_COMPARE} picked to compare")
    action.button(
        "Compare side by side",
        icon=":material/compare:",
        disabled=len(chosen) < 2,
        on_click=leave_gallery,
        kwargs={"compare": ",".join(chosen)},
        width="stretch",
    )
    delete_button(chosen, "Delete", key="delete-picked", into=delete)
    clear.button("Clear", on_click=chosen.clear, width="stretch")


EXPORTS = {"csv": ("CSV", "text/csv"), "coco": ("COCO JSON", "application/json"), "zip": ("ZIP", "application/zip")}


def export_buttons(query: HistoryQuery, thresholds: DisplayThresholds) -> None:
    """Downloads of everything the filter shows (all pages), built only when asked for."""
    with st.popover("Export", icon=":material/download:"):
        st.caption("Everything the filters show, at the thresholds on screen.")
        fmt = st.radio("Format", list(EXPORTS), format_func=lambda f: EXPORTS[f][0], horizontal=True, key="export")
        if st.button("Prepare the file", icon=":material/build:"):
            try:
                data = exports.export(resources.service(), replace(query, page=1), fmt, thresholds)
            except PicMetricError as error:
                st.error(str(error), icon=":material/error:")
                return
            name, mime = EXPORTS[fmt]
            st.download_button(
                f"Download {name}",
                data,
                file_name=exports.file_name(fmt),
                mime=mime,
                icon=":material/download:",
            )


def more_like_this(md5: str, thresholds: DisplayThresholds) -> None:
    """The stored photos most like this one in content, as small cards."""
    similar = resources.service().similar(md5, k=MORE_LIKE_THIS)
    st.subheader("More like this")
    if similar is None:
        st.caption("Not indexed yet: run `picmetric similar backfill` for analyses stored before this feature.")
        return
    if not similar:
        st.caption("No other stored photos yet.")
        return
    # Cards of one width that wrap: five or six a row on a laptop, two on a phone, never squeezed.
    with st.container(horizontal=True, gap="small"):
        for photo in similar:
            with st.container(border=True, width=SIMILAR_CARD_PX, height="stretch"):
                record = photo.submission.record
                st.image(card_thumbnail(record.keys.thumbnail), width="stretch")
                plain.line(record.filename or record.md5[:12], bold=True)
                plain.line(f"similarity {photo.similarity:.2f}", muted=True)
                st.button(
                    "Open",
                    key=f"similar-{record.md5}",
                    on_click=open_similar,
                    args=(record.md5,),
                    icon=":material/open_in_full:",
                    width="stretch",
                )


def open_similar(md5: str) -> None:
    st.query_params["md5"] = md5


def gallery(query: HistoryQuery, thresholds: DisplayThresholds) -> None:
    page = history_data.history(query)
    total = history_data.count(query)
    if not page.items:
        st.info("No analyses match these filters." if total == 0 else "No more analyses.", icon=":material/search_off:")
    newest_first = query.sort == "newest"
    by_uniqueness = not newest_first or query.min_uniqueness is not None or query.max_uniqueness is not None
    notes = uniqueness_notes([item.record.md5 for item in page.items]) if by_uniqueness else {}
    for start in range(0, len(page.items), GRID_COLUMNS):
        for column, submission in zip(st.columns(GRID_COLUMNS), page.items[start : start + GRID_COLUMNS], strict=False):
            with column, st.container(border=True, height="stretch"):  # every card as tall as its row
                thumbnail_card(submission, thresholds, notes.get(submission.record.md5))
    pages = max(1, -(-total // query.limit))
    previous, label, following = st.columns([1, 2, 1], vertical_alignment="center")
    back, onward = ("Newer", "Older") if newest_first else ("Previous", "Next")
    if previous.button(back, icon=":material/chevron_left:", disabled=query.page <= 1, width="stretch"):
        st.session_state["page"] = query.page - 1
        st.rerun()
    label.caption(f"Page {query.page} of {pages} · {total} analyses", text_alignment="center")
    if following.button(onward, icon=":material/chevron_right:", disabled=not page.has_more, width="stretch"):
        st.session_state["page"] = query.page + 1
        st.rerun()


def summary() -> None:
    """Totals and charts for stakeholders."""
    everything = history_data.count(HistoryQuery(min_score=0.0))
    with_faces = history_data.count(HistoryQuery(min_score=0.0, has_faces=True))
    objects = history_data.label_frequencies("detector", 15)
    classes = history_data.label_frequencies("classifier", 15)
    over_time = history_data.counts_over_time()
    a, b, c, d = st.columns(4)
    a.metric("Images analysed", everything)
    b.metric("With faces", with_faces)
    c.metric("Object kinds seen", len(objects))
    d.metric("Days active", len(over_time))
    left, middle, right = st.columns(3)
    config = {"displayModeBar": False}
    left.plotly_chart(
        charts.label_frequency_chart(objects, "Objects found (COCO)"), key="summary-objects", config=config
    )
    middle.plotly_chart(
        charts.label_frequency_chart(classes, "Top classes (ImageNet)"), key="summary-classes", config=config
    )
    right.plotly_chart(charts.over_time_chart(over_time), key="summary-time", config=config)


def gallery_view(thresholds: DisplayThresholds) -> None:
    query = filters_ui(thresholds)
    query = map_section(query)  # a selection on the map narrows the gallery to its photos
    first_page = replace(query, page=1)
    if st.session_state.get("_last_query") != first_page:  # any filter changed: back to the first page
        st.session_state["_last_query"] = first_page
        if query.page != 1:
            st.session_state["page"] = 1
            st.rerun()
    deleted_notice()
    export_buttons(query, thresholds)
    compare_bar()
    history_videos(query)  # the clips with the filter's label, above the photos
    gallery(query, thresholds)
    with st.expander("Summary", expanded=True, icon=":material/monitoring:"):
        summary()


try:
    title, settings = st.columns([3, 1], vertical_alignment="bottom")
    with settings:
        thresholds = components.thresholds_panel()
    md5 = usable_text("md5 in the link", (st.query_params.get("md5") or "").strip().lower())
    compare_text = usable_text("compare list in the link", st.query_params.get("compare") or "")
    compare = [m for m in compare_text.lower().split(",") if m]
    if md5:
        detail_view(md5, thresholds)
    elif compare:
        compare_view(compare, thresholds)
    else:
        title.title("History")
        gallery_view(thresholds)
    delete_confirmation(thresholds)
except PicMetricError as error:
    st.error(str(error), icon=":material/error:")
except Exception:
    logging.getLogger("picmetric_ui.history").exception("the History page failed")
    st.error("Something went wrong while reading the history; it was logged. Try again.", icon=":material/error:")
