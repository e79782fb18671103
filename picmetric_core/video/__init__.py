"""Video files (issue #23): a clip in, tracked objects, faces, a timeline, line counts and an annotated clip out.

The typed results every part speaks are in :mod:`picmetric_core.video.results`; the jobs that run an
analysis in the background and keep it (store + database) are reached through :meth:`Runtime.videos`.
"""
