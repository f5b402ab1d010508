"""The module of a pipeline stage: found by name, checked without running it, imported.

A name (``text_cleaner``, ``stages.clean``) is a ``.py`` file in the pipeline file's folder. A
pipeline file is code that runs, so modules reached outside that folder (a symlink out, a
module only on ``sys.path``) need the caller's opt-in, and a module must bind ``invoke`` at
top level, which is checked by parsing it: nothing runs before every stage checks out.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .errors import ConfigError

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)


@dataclass(frozen=True)
class StageModule:
    """Where a stage's module was found: ``file`` (None: no Python source), and whether it
    is imported from that file (in the folder, or linked from it) or by name from sys.path."""

    name: str
    file: Path | None
    on_sys_path: bool

    def load(self) -> ModuleType:
        """Import the module (its top-level code runs now)."""
        if self.on_sys_path or self.file is None:
            return importlib.import_module(self.name)
        return _import_file(self.name, self.file)


def find_module(at: str, name: str, folder: Path, allow_outside: bool) -> StageModule:
    """Find module ``name`` and check it defines ``invoke``, without running it.

    Raises ConfigError naming ``at`` (the file and stage) and the fix.
    """
    if not _MODULE_NAME.fullmatch(name) or name.endswith(".py"):
        raise ConfigError(
            f"{at}: {name!r} is not a module name (letters, digits, '_' and dots, "
            f"e.g. 'text_cleaner' for text_cleaner.py next to the pipeline file)"
        )
    *packages, last = name.split(".")
    candidate = folder.joinpath(*packages, f"{last}.py")
    source: Path | None
    on_sys_path = False
    if candidate.is_file():
        source = candidate.resolve()
        if not allow_outside and not source.is_relative_to(folder):
            raise ConfigError(
                f"{at}: {candidate} links to {source}, outside the pipeline's folder {folder}; "
                "pass --allow-outside-modules to run it"
            )
    elif not allow_outside:
        raise ConfigError(
            f"{at}: no module {name!r} ({candidate.relative_to(folder)}) in the pipeline's "
            f"folder {folder}; modules from elsewhere on sys.path run only with "
            "--allow-outside-modules"
        )
    else:
        source, on_sys_path = _find_on_sys_path(at, name), True
    if source is not None and not _defines_invoke(at, name, source):
        raise ConfigError(f"{at}: {name!r} ({source}) has no top-level invoke(envelope, config)")
    return StageModule(name, source, on_sys_path)


def _find_on_sys_path(at: str, name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)  # imports the parent packages of a dotted name
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{at}: cannot find module {name!r}: {exc}") from None
    if spec is None:
        raise ConfigError(f"{at}: cannot find module {name!r} next to the file or on sys.path")
    origin = spec.origin
    return Path(origin) if origin and origin.endswith(".py") else None


def _defines_invoke(at: str, name: str, source: Path) -> bool:
    """Whether ``source`` binds ``invoke`` at top level; True when it does not even parse.

    A module that does not parse is left for the import, which fails inside the stage's
    span, so the trace records the error.
    """
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except OSError as exc:
        raise ConfigError(f"{at}: cannot read {name!r} ({source}): {exc}") from None
    except (SyntaxError, ValueError):
        return True
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef) and statement.name == "invoke":
            return True
        if isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if any(isinstance(t, ast.Name) and t.id == "invoke" for t in targets):
                return True
        if isinstance(statement, ast.ImportFrom) and any(
            (alias.asname or alias.name) == "invoke" for alias in statement.names
        ):
            return True
    return False


def _import_file(name: str, source: Path) -> ModuleType:
    # Under a key of its own: two pipelines' "clean.py" are two modules.
    key = f"glmtrace_pipeline_{abs(hash(str(source)))}_{name.replace('.', '_')}"
    if key in sys.modules:
        return sys.modules[key]
    found = importlib.util.spec_from_file_location(key, source)
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    sys.modules[key] = module
    try:
        found.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]  # a broken module is imported afresh next time
        raise
    return module
