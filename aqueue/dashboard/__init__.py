"""The web dashboard's files: index.html, app.js, app.css, favicon.svg. Plain files served as
they are by aqueue/api/dashboard.py (no build step, nothing fetched from elsewhere)."""
