"""Helpers shared by more than one test module (and by bench/): servers, photos, rows, the browser, the API."""
