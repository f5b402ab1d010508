"""Integration tests against the real backends (see backends.py and scripts/provision.sh)."""
