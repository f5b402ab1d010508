"""``python -m glmtrace``: the glmtrace command line."""

from glmtrace._internal.cli.main import main

main()
