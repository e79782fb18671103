"""The Live page's camera stream: the newest frame through the detector and the face network, drawn on.

:mod:`~picmetric_core.live.processor` holds the worker (latest frame wins, the classifier's cadence, the
figures); :mod:`~picmetric_core.live.drawing` draws onto frames. Nothing here imports Streamlit.
"""
