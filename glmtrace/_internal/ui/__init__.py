"""``glmtrace ui`` (a local read-only web app over the store) and ``glmtrace stats``."""
