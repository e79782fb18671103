"""The JSON API: the old Flask endpoints for old clients, and a versioned API with the full results.

Serve it with ``uvicorn picmetric_core.api:create_app --factory`` (see the README). ``app`` builds the
application (middleware, error handlers), ``deps`` hands routes what they need from the app's state,
``routes/`` holds the endpoints and ``schemas`` the documented bodies.
"""

from picmetric_core.api.app import create_app

__all__ = ["create_app"]
