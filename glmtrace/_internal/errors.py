"""The exceptions glmtrace raises into user code: only for configuration mistakes."""

from __future__ import annotations


class GlmtraceError(Exception):
    """Base class of every error glmtrace raises on purpose."""


class ConfigError(GlmtraceError, ValueError):
    """A configuration value is wrong; the message names the value and the fix."""


class MissingDependencyError(GlmtraceError, ImportError):
    """An optional integration was enabled without its extra installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'glmtrace[{extra}]'"
        )
        self.package = package
        self.extra = extra
