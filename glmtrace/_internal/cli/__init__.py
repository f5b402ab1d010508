"""The ``glmtrace`` command line: commands, terminal rendering and Perfetto export."""
