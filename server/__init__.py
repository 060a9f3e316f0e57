"""The HTTP API (Flask) over the lookalike library; the only package that imports Flask."""
