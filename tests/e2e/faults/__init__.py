"""The daemon against dependencies that fail on purpose: it degrades, says so, and recovers."""
