"""The app's sign-in: a shared password from settings, asked once per browser session.

Off unless ``PICMETRIC_APP_PASSWORD`` is set: the app serves 127.0.0.1 only by default, where the
person at the machine is the only viewer. Serving it to others is a deliberate choice
(``picmetric_ui.serving`` refuses a network address without a password), and then every page asks
for it before it shows anything.
"""

from __future__ import annotations

import hmac
import time

import streamlit as st

from picmetric_core.config import Settings

SIGNED_IN_KEY = "signed_in"
# A wrong password costs this long: guessing it from a script gets slow.
WRONG_PASSWORD_DELAY_S = 1.0


def password_matches(given: str, settings: Settings) -> bool:
    """Whether ``given`` is the configured password (compared in constant time).

    Example:
        >>> from pydantic import SecretStr
        >>> settings = Settings(_env_file=None, app_password=SecretStr("demo day"))
        >>> password_matches("demo day", settings), password_matches("demo", settings)
        (True, False)
    """
    if settings.app_password is None:
        return True
    expected = settings.app_password.get_secret_value().encode()
    return hmac.compare_digest(given.encode(), expected)


def require_sign_in(settings: Settings) -> None:
    """Stop the page here, showing only a password box, until this session has signed in."""
    if settings.app_password is None or st.session_state.get(SIGNED_IN_KEY):
        return
    st.title("PicMetric")
    with st.container(width=480), st.form("sign-in"):
        given = st.text_input("Password", type="password", key="sign-in-password")
        submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
    if submitted:
        if password_matches(given, settings):
            st.session_state[SIGNED_IN_KEY] = True
            st.rerun()
        time.sleep(WRONG_PASSWORD_DELAY_S)
        st.error("That password is not right.")
    st.caption("This PicMetric asks for the password its owner set (PICMETRIC_APP_PASSWORD).")
    st.stop()
