"""The HTTP surface: server, dashboard, metrics and OpenAPI document.

It reads the running daemon only through `view.DaemonView` and never imports daemon.py, so the
daemon can import it without a cycle.
"""
