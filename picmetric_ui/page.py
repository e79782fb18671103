"""What every page starts with: its config, the sign-in, the models' warm-up and the sidebar."""

from __future__ import annotations

import streamlit as st

from picmetric_ui import components, resources
from picmetric_ui.sign_in import require_sign_in

# The browser tab's icon, inline: a Material icon as page_icon makes the browser fetch it from Google's
# font servers, and the app must work offline and tell no outside host who is using it.
TAB_ICON_SVG = """<svg viewBox="0 0 24 24" width="24" height="24">
<rect width="24" height="24" rx="5" fill="#2563eb"/>
<circle cx="10.5" cy="10.5" r="5" fill="none" stroke="#ffffff" stroke-width="2.2"/>
<path d="M14.2 14.2 L19 19" stroke="#ffffff" stroke-width="2.6" stroke-linecap="round"/>
</svg>"""


def page_setup(title: str) -> None:
    """Set the page up; call it first on every page.

    Args:
        title: The page's name, shown in the browser tab after "PicMetric · ".
    """
    st.set_page_config(page_title=f"PicMetric · {title}", page_icon=TAB_ICON_SVG, layout="wide")
    require_sign_in(resources.settings())  # nothing below runs for a session that has not signed in
    resources.warmup()  # starts loading the networks in the background, once per server
    with st.sidebar:
        components.page_links()
        components.model_panel()
