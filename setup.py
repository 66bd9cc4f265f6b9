"""Compile the hot modules with mypyc when a C compiler is there; pure Python otherwise.

The modules stay plain, type-annotated Python (mypyc compiles the .py files as they are) and
are installed next to their compiled versions, so ``FERRYMQ_PURE_PYTHON=1`` can still run
them. Each extension is optional: without a compiler, with a type error mypyc refuses, or
with ``FERRYMQ_BUILD_PURE=1``, the install succeeds as pure Python. ``_compiled.json``
records the hash of every source of native.BUILT_FROM, so an edited checkout runs its
sources until it is rebuilt (src/ferrymq/native.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
RECORD = "_compiled.json"


def _names(tuple_name: str) -> list[str]:
    """The strings of a tuple of native.py (HOT, BUILT_FROM), read without importing it."""
    text = (SRC / "ferrymq" / "native.py").read_text()
    block = text.split(f"{tuple_name} = (", 1)[1].split(")", 1)[0]
    return [part.strip().strip('"') for part in block.split(",") if part.strip()]


def hot_modules() -> list[str]:
    return _names("HOT")


def built_from() -> list[str]:
    """The sources of native.BUILT_FROM (a package's .py files, or one file named)."""
    names: list[str] = []
    for entry in _names("BUILT_FROM"):
        if entry.endswith(".py"):
            names.append(entry)
        else:
            folder = SRC / "ferrymq" / entry
            names += [f"{entry}/{path.name}" for path in sorted(folder.glob("*.py"))]
    return names


def source_of(module: str) -> Path:
    return SRC.joinpath(*module.split(".")).with_suffix(".py")


def extensions() -> list:
    if os.environ.get("FERRYMQ_BUILD_PURE", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("ferrymq: mypyc (mypy) is not installed; building pure Python")
        return []
    sources = [str(source_of(name).relative_to(ROOT)) for name in hot_modules()]
    try:
        # mypyc compiles what type-checks; the rest of ferrymq is only read for its types.
        exts = mypycify(
            ["--ignore-missing-imports", "--follow-imports=silent", *sources],
            opt_level="3",
            group_name="ferrymq",
        )
    except (Exception, SystemExit) as exc:  # mypy's errors are printed above
        why = "type errors" if isinstance(exc, SystemExit) else repr(exc)
        print(f"ferrymq: mypyc cannot compile the hot modules ({why}); building pure Python")
        return []
    for ext in exts:
        ext.optional = True  # no C compiler: the build goes on, pure Python
        if sys.platform.startswith("linux") and "__mypyc" not in ext.name:
            # Code and read-only data on shared pages: each of the small extensions
            # maps 2 pages instead of 5, 0.15 MiB less RSS at start in all. Not the library
            # they load, where the hot code runs: its layout stays the linker's default.
            ext.extra_link_args = [*ext.extra_link_args, "-Wl,-z,noseparate-code"]
    return exts


class BuildExt(build_ext):
    """Builds what it can, then records which sources the built extensions come from."""

    def run(self) -> None:
        super().run()
        import mypy.version

        names = {ext.name for ext in self.extensions}
        done = {n for n in names if Path(self.build_lib, self.get_ext_filename(n)).exists()}
        # What the build read: the hot modules and the types they were compiled on.
        sources = {}
        if names and done == names:  # the modules and the library they share
            for name in built_from():
                path = SRC / "ferrymq" / name
                sources[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        record = json.dumps(
            {
                "compiler": f"mypyc {mypy.version.__version__}",
                "modules": hot_modules() if sources else [],
                "sources": sources,
            }
        )
        targets = [Path(self.build_lib, "ferrymq")]
        if self.inplace or self.editable_mode:
            targets.append(SRC / "ferrymq")
        for target in targets:
            target.mkdir(parents=True, exist_ok=True)
            (target / RECORD).write_text(record + "\n")


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
