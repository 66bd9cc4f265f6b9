"""Whether the hot modules run compiled: all or none, and never a build of other sources."""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from ferrymq import native


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package directory with every hot module built and recorded, as setup.py leaves it."""
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    for entry in native.BUILT_FROM:  # a package, or one file of one ("cluster/codec.py")
        (tmp_path / entry.removesuffix(".py")).parent.mkdir(exist_ok=True)
        if not entry.endswith(".py"):
            (tmp_path / entry).mkdir(exist_ok=True)
    sources = {}
    for name in (
        *native.HOT,
        "ferrymq.mqtt.packets",
        "ferrymq.core.sessions",
        "ferrymq.model.message",
    ):
        source = tmp_path.joinpath(*name.split(".")[1:]).with_suffix(".py")
        source.write_text(f"# {name}\n")
        key = f"{source.parent.name}/{source.name}"
        sources[key] = hashlib.sha256(source.read_bytes()).hexdigest()
        if name in native.HOT:
            source.with_suffix(EXTENSION_SUFFIXES[0]).write_bytes(b"")
    record = {"compiler": "mypyc 9.9", "modules": list(native.HOT), "sources": sources}
    (tmp_path / "_compiled.json").write_text(json.dumps(record))
    monkeypatch.setattr(native, "_PACKAGE", tmp_path)
    monkeypatch.setattr(native, "_RECORD", tmp_path / "_compiled.json")
    return tmp_path


def test_a_complete_build_of_these_sources_runs_compiled(package: Path) -> None:
    compiled, summary = native._decide()
    assert compiled == list(native.HOT)
    assert summary == f"compiled with mypyc 9.9 ({len(native.HOT)} hot modules)"


@pytest.mark.parametrize("value", ["1", "yes"])
def test_the_environment_variable_forces_the_sources(
    package: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(native.PURE_ENV, value)
    assert native._decide() == ([], "pure Python (FERRYMQ_PURE_PYTHON is set)")


def test_zero_or_empty_does_not_force_them(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("0", ""):
        monkeypatch.setenv(native.PURE_ENV, value)
        assert native._decide()[0] == list(native.HOT)


def test_an_edited_file_of_mqtt_runs_every_module_from_source(package: Path) -> None:
    # packets.py is not compiled, but the compiled modules were built on its types.
    (package / "mqtt" / "packets.py").write_text("# edited\n")
    assert native._decide() == (
        [],
        "pure Python (changed since the build: mqtt/packets.py; make build)",
    )


@pytest.mark.parametrize("path", ["core/router.py", "core/sessions.py", "model/message.py"])
def test_an_edited_file_of_core_or_model_runs_the_sources_too(package: Path, path: str) -> None:
    """A compiled module of core/ or not, or the model types the compiled code checks."""
    (package / path).write_text("# edited\n")
    assert native._decide() == ([], f"pure Python (changed since the build: {path}; make build)")


def test_of_cluster_only_its_compiled_files_count(package: Path) -> None:
    """cluster/ is built from two files; the rest of it (redis) is never compiled."""
    (package / "cluster" / "node.py").write_text("# not compiled\n")
    assert native._decide()[0] == list(native.HOT)
    (package / "cluster" / "outbox.py").write_text("# edited\n")
    assert native._decide() == (
        [],
        "pure Python (changed since the build: cluster/outbox.py; make build)",
    )


def test_a_new_file_of_mqtt_counts_as_a_change(package: Path) -> None:
    (package / "mqtt" / "extra.py").write_text("")
    assert native._decide()[1] == "pure Python (changed since the build: mqtt/extra.py; make build)"


def test_a_missing_extension_or_record_means_pure(package: Path) -> None:
    (package / "mqtt" / f"codec{EXTENSION_SUFFIXES[0]}").unlink()
    assert native._decide() == ([], "pure Python (not compiled)")
    (package / "_compiled.json").unlink()
    assert native._decide() == ([], "pure Python (not compiled)")


def test_a_build_that_fell_back_to_pure_python_is_not_compiled(package: Path) -> None:
    record = json.loads((package / "_compiled.json").read_text())
    record["modules"] = []
    (package / "_compiled.json").write_text(json.dumps(record))
    assert native._decide() == ([], "pure Python (not compiled)")
