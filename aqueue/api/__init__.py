"""The HTTP API (Starlette): routes in jobs.py, composition in app.py."""
