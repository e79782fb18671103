"""Streamlit components shared by the Analyze and History pages.

Everything here is UI: it calls :mod:`picmetric_core` for the work and never re-implements it.
"""
