"""Load a graph from its file, as `agentflow run`, `serve` and `inbox` do: `FILE.py[:attr]`.

A graph file is imported under the dotted name it has from the current directory
(`graphs/support.py` is `graphs.support`), with that directory importable: the name any
other process of the deployment imports it by. So the types it defines are recorded in
checkpoints under names a worker can revive, and a module the process has already
imported is used as it is, never run a second time under another name. A file outside
the current directory is imported by its own name from its folder (`/srv/x/bot.py` is
`bot`).

The module's `make_context()`, when it defines one, builds what the graph's nodes and
tools get as `ctx.deps` (a database handle, API clients); it is called before any model
is asked anything, and a graph that declares a context type without one fails at once.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from agentflow.exceptions import AgentflowError, ConfigError
from agentflow.graph import AgentGraph

__all__ = ["LoadedGraph", "import_file", "load_graph", "module_name"]


def module_name(path: Path) -> tuple[str, Path]:
    """The dotted name `path` is imported under, and the folder that must be importable."""
    resolved = path.resolve()
    root = Path.cwd().resolve()
    try:
        parts = resolved.with_suffix("").relative_to(root).parts
    except ValueError:
        parts = ()
    if not parts or not all(part.isidentifier() for part in parts):
        root, parts = resolved.parent, (resolved.stem,)
    return ".".join(parts), root


def import_file(path: Path) -> ModuleType:
    """Import a Python file under its stable dotted name (see the module's docstring).

    Raises:
        ConfigError: The file is missing, is not importable under its name, or importing
            it failed.
    """
    if not path.is_file():
        raise ConfigError("no such file", file=str(path))
    if path.suffix != ".py":
        raise ConfigError("not a Python file", file=str(path))
    name, root = module_name(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(name)
    except AgentflowError:
        raise
    except Exception as exc:  # the user's code: one line, never a traceback
        raise ConfigError(f"import failed: {type(exc).__name__}: {exc}", file=str(path)) from exc
    found = getattr(module, "__file__", None)
    if found is None or Path(found).resolve() != path.resolve():
        raise ConfigError(
            f"imports as {name!r}, which is another module ({found}); rename the file",
            file=str(path),
        )
    return module


@dataclass(kw_only=True, frozen=True)
class LoadedGraph:
    """A graph loaded from its file, with what the file gives it."""

    ref: str
    """How it was named: `FILE.py[:attr]`."""
    graph: AgentGraph[Any]
    module: ModuleType

    def context(self) -> Any:
        """What the module's `make_context()` returns, or None when it defines none.

        Raises:
            ConfigError: `make_context()` failed, or the graph declares a context type and
                the module gives it none, or one of another type.
        """
        file = self.module.__file__
        make_context = getattr(self.module, "make_context", None)
        wanted = self.graph.context
        if not callable(make_context):
            if wanted is None:
                return None
            raise ConfigError(
                f"graph {self.graph.name!r} needs a {wanted.__name__} as its context: "
                "define make_context() in the module to build it",
                file=file,
            )
        try:
            context = make_context()
        except AgentflowError:
            raise
        except Exception as exc:  # the user's code: one line, never a traceback
            raise ConfigError(
                f"make_context() failed: {type(exc).__name__}: {exc}", file=file
            ) from exc
        if isinstance(wanted, type) and not _is_instance(context, wanted):
            raise ConfigError(
                f"make_context() returned a {type(context).__name__}; graph "
                f"{self.graph.name!r} needs a {wanted.__name__}",
                file=file,
            )
        return context


def _is_instance(value: Any, wanted: type) -> bool:
    try:
        return isinstance(value, wanted)
    except TypeError:  # a Protocol that is not runtime-checkable: nothing to check against
        return True


def load_graph(ref: str) -> LoadedGraph:
    """Import `path/to/file.py[:attr]` and find its AgentGraph (`attr` defaults to `graph`).

    Raises:
        ConfigError: The file cannot be imported, or has no AgentGraph by that name.
    """
    path_text, sep, attr = ref.rpartition(":")
    if not sep or not attr.isidentifier():
        path_text, attr = ref, "graph"
    path = Path(path_text)
    module = import_file(path)
    graph = getattr(module, attr, None)
    if not isinstance(graph, AgentGraph):
        found = [k for k, v in vars(module).items() if isinstance(v, AgentGraph)]
        hint = f" (AgentGraphs in it: {', '.join(found)})" if found else ""
        raise ConfigError(f"no AgentGraph named {attr!r}{hint}", file=str(path), key=attr)
    return LoadedGraph(ref=ref, graph=graph, module=module)
