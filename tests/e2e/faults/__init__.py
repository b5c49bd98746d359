"""Issue 10: the daemon against dependencies that fail on purpose."""
