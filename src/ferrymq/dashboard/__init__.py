"""The web dashboard: a browser app served on its own listener, a client of ``/api/v4``."""
