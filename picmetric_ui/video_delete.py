"""The Video page's Delete: a button over an opened clip, a confirmation that says what goes, then the clip is
gone from History, the store and the database (``VideoJobs.delete``) and the page is back at its upload box."""

from __future__ import annotations

import streamlit as st

from picmetric_core.errors import PicMetricError
from picmetric_core.video.results import StoredVideo
from picmetric_ui import plain, video_cards
from picmetric_ui.video_cards import videos
from picmetric_ui.video_data import info_text

_DELETED = "_video_deleted"  # the name of the clip the last delete removed, said once


def delete_button(stored: StoredVideo) -> None:
    """ "Delete", which opens the confirmation."""
    if st.button("Delete", icon=":material/delete:", key="video-delete"):
        confirm_delete(stored)


@st.dialog("Delete for good?")
def confirm_delete(stored: StoredVideo) -> None:
    """Says what goes, then deletes the clip when confirmed."""
    st.markdown("Deleting this clip removes from the store and the database:")
    with st.container(border=True):
        plain.line(stored.filename or stored.video_id, bold=True)
        plain.line(f"{info_text(stored.analysis.info)} · id {stored.video_id}", muted=True)
    st.markdown(
        "- the original clip and the annotated clip\n"
        f"- its poster, its {len(stored.analysis.tracks)} tracks with their crops, and every frame's results"
    )
    st.caption("Links to what goes stop working, everywhere. This cannot be undone.")
    delete, cancel = st.columns(2)
    if delete.button("Delete", type="primary", icon=":material/delete:", key="video-delete-confirm", width="stretch"):
        try:
            videos().delete(stored.video_id)
        except PicMetricError as error:
            st.error(str(error), icon=":material/error:")
            return
        video_cards.clear()
        st.session_state[_DELETED] = stored.filename or stored.video_id
        st.query_params.clear()
        st.rerun()
    if cancel.button("Cancel", key="video-delete-cancel", width="stretch"):
        st.rerun()


def deleted_notice() -> None:
    """Says once, back at the upload box, what the last delete removed."""
    if name := st.session_state.pop(_DELETED, None):
        st.success(f"Deleted {name} and everything kept for it.", icon=":material/delete:")
