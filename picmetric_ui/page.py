"""What every page starts with: its config, the models' warm-up and the sidebar."""

from __future__ import annotations

import streamlit as st

from picmetric_ui import components, resources


def page_setup(title: str, icon: str) -> None:
    """Set the page up; call it first on every page.

    Args:
        title: The page's name, shown in the browser tab after "PicMetric · ".
        icon: A Material icon (``":material/…:"``), also used in the browser tab.
    """
    st.set_page_config(page_title=f"PicMetric · {title}", page_icon=icon, layout="wide")
    resources.warmup()  # starts loading the networks in the background, once per server
    with st.sidebar:
        components.page_links()
        components.model_panel()
