"""Private implementation of glmtrace. Import from ``glmtrace`` instead."""
