"""Where in a plugin's own code an exception was raised, for the messages that report it.

A bug in a plugin's ``configure``, ``collate`` or ``finalize`` (or an import that fails) reaches
its author as one line (``KeyError('oops')``); without the file and line they cannot find it, and
a remote submitter never sees the controller's log. `raised_at` names the frame that matters:
the innermost one in the plugin's package, else the innermost outside farm and Python's own
library (a library the plugin calls), else none.
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
import traceback
from pathlib import Path


def package_dir(obj: object) -> Path | None:
    """The folder of the top-level package `obj` (a media type, its class, or a module name) comes
    from; None when it has no file (built in, or registered from a test's own module)."""
    name = obj if isinstance(obj, str) else getattr(obj, "__module__", None) or type(obj).__module__
    top = name.partition(".")[0]
    module = sys.modules.get(top)
    file = getattr(module, "__file__", None)
    if file is None and module is None:  # one that failed to import is not kept: ask the importer
        try:  # a top-level name: finding it imports nothing
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        file = spec.origin if spec is not None and spec.has_location else None
    if file is None:
        return None
    path = Path(file).resolve()
    return path.parent if path.name == "__init__.py" else path


def raised_at(exc: BaseException, plugin: object | None = None) -> str | None:
    """``path:line, in function`` of the frame that raised `exc`: the innermost in `plugin`'s package
    (see `package_dir`) when one is, else the innermost outside farm and Python's library; None when
    there is none (a plugin module that is not installed), or for a `SyntaxError` its file and line."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:  # raised by the compiler, no frame
        return f"{exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _not_plugin(f.filename)]
    if not frames:  # raised by farm or Python itself (a plugin module that is not there): no place
        return None
    home = package_dir(plugin) if plugin is not None else None
    own = [f for f in frames if _under(f.filename, home)] if home is not None else []
    frame = (own or frames)[-1]
    return f"{frame.filename}:{frame.lineno}, in {frame.name}"


def describe_bug(exc: BaseException, plugin: object | None = None) -> str:
    """``TypeName: message (at path:line, in function)``: an unexpected exception for a message."""
    text = f"{type(exc).__name__}: {exc}"
    place = raised_at(exc, plugin)
    return f"{text} (at {place})" if place else text


_PATHS = sysconfig.get_paths()
#: Python's own library (site-packages, where plugins are installed, lies inside it), and farm's package
_PYTHON = tuple({Path(_PATHS[k]).resolve() for k in ("stdlib", "platstdlib")})
_INSTALLED = tuple({Path(_PATHS[k]).resolve() for k in ("purelib", "platlib")})
_FARM = Path(__file__).resolve().parent


def _not_plugin(filename: str) -> bool:
    """A frame no plugin author can act on: the importer's frozen code, Python's library, farm's."""
    if filename.startswith("<") or _under(filename, _FARM):
        return True
    return any(_under(filename, d) for d in _PYTHON) and not any(_under(filename, d) for d in _INSTALLED)


def _under(filename: str, home: Path) -> bool:
    try:
        path = Path(filename).resolve()
    except OSError:
        return False
    return path == home or home in path.parents
