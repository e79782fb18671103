"""Batch analysis on Ray Data: a folder, a glob, a list of paths or URLs, or an S3 prefix, analysed once and stored."""
