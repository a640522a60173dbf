"""The browser dashboard: static files served by the API."""
