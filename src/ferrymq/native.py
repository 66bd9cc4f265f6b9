"""Compiled or pure Python: whether the hot modules run as C extensions; the switch to sources.

``setup.py`` compiles the modules of ``HOT`` with mypyc when it can and records in
``_compiled.json`` the SHA-256 of every source of ``BUILT_FROM`` (the packages whose types
the compiled code was built on). Importing ``ferrymq`` calls ``install()``, which makes the
hot modules load from their ``.py`` files when ``FERRYMQ_PURE_PYTHON`` is set (not empty,
not ``0``) or when an extension is missing or a file of ``BUILT_FROM`` changed since the
build (an edited checkout before ``make build``), so what runs is always what the sources
say."""

from __future__ import annotations

import json
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from importlib.util import spec_from_file_location

from ferrymq.digests import sha256_hex

# The modules of the message path (bench/profile.py), the ones setup.py compiles.
HOT = (
    "ferrymq.model.message",
    "ferrymq.model.delivery",
    "ferrymq.storage.codec",
    "ferrymq.mqtt.message_packets",
    "ferrymq.mqtt.wire",
    "ferrymq.mqtt.codec",
    "ferrymq.mqtt.trie",
    "ferrymq.mqtt.connection",
    "ferrymq.core.flow",
    "ferrymq.core.router",
    "ferrymq.core.retained",
    "ferrymq.core.session",
    "ferrymq.core.client",
    "ferrymq.core.broker",
    "ferrymq.cluster.codec",
    "ferrymq.cluster.outbox",
)
# The packages of the hot modules and of the types they read: compiled code checks those
# types and calls the other compiled modules directly, so an edit here stales the build.
# Of ``cluster`` only the two compiled files: the rest imports redis and is never compiled.
BUILT_FROM = ("mqtt", "core", "model", "storage", "cluster/codec.py", "cluster/outbox.py")
PURE_ENV = "FERRYMQ_PURE_PYTHON"
_PACKAGE = os.path.dirname(os.path.realpath(__file__))  # os.path: pathlib costs 0.7 MB of RSS
_RECORD = os.path.join(_PACKAGE, "_compiled.json")


class _FromSource:
    """A meta path finder that loads the given modules from their ``.py`` files."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name not in self.names:
            return None
        return spec_from_file_location(name, _source(name))


def _source(name: str) -> str:
    return os.path.join(_PACKAGE, *name.split(".")[1:]) + ".py"


def _has_extension(name: str) -> bool:
    stem = _source(name)[: -len(".py")]
    return any(os.path.exists(stem + suffix) for suffix in EXTENSION_SUFFIXES)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _decide() -> tuple[list[str], str]:
    """The hot modules that run compiled, and a sentence for ``--version`` and the start log.

    All or none: compiled code calls the other compiled modules directly, so one module
    from source beside compiled ones would not be what runs.
    """
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return [], f"pure Python ({PURE_ENV} is set)"
    try:
        record = json.loads(_read(_RECORD))
    except (OSError, ValueError):
        return [], "pure Python (not compiled)"
    if record.get("modules") != list(HOT) or not all(_has_extension(name) for name in HOT):
        return [], "pure Python (not compiled)"
    built: dict[str, str] = record.get("sources", {})
    now = {name: os.path.join(_PACKAGE, name) for name in built_from(_PACKAGE)}
    stale = sorted(
        name
        for name in now.keys() | built.keys()
        if name not in now or name not in built or sha256_hex(_read(now[name])) != built[name]
    )
    if stale:
        return [], f"pure Python (changed since the build: {', '.join(stale)}; make build)"
    return list(HOT), f"compiled with {record.get('compiler', '?')} ({len(HOT)} hot modules)"


def built_from(package_dir: str) -> list[str]:
    """The sources of ``BUILT_FROM`` under ``package_dir``, as ``"core/broker.py"``."""
    names: list[str] = []
    for entry in BUILT_FROM:
        if entry.endswith(".py"):
            names.append(entry)
        else:
            folder = os.path.join(package_dir, entry)
            names += sorted(f"{entry}/{n}" for n in os.listdir(folder) if n.endswith(".py"))
    return names


COMPILED: list[str] = []
SUMMARY = ""


def install() -> None:
    """Decide once, before any hot module is imported, where each hot module comes from."""
    global SUMMARY
    if SUMMARY:
        return
    compiled, SUMMARY = _decide()
    COMPILED[:] = compiled
    sources = frozenset(HOT) - frozenset(compiled)
    if sources:
        sys.meta_path.insert(0, _FromSource(sources))
