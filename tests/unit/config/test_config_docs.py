"""The documentation stays true to the code: every setting is documented and parses."""

from __future__ import annotations

import re
from dataclasses import fields

from ferrymq import config
from ferrymq.commands.parser import build_parser
from paths import ROOT

EXAMPLE = ROOT / "docs" / "ferrymq.example.toml"


def test_example_config_lists_every_setting() -> None:
    text = EXAMPLE.read_text()
    documented = set(re.findall(r"^#? ?([a-z0-9_]+) = ", text, re.MULTILINE))
    missing = {f.name for f in fields(config.Settings)} - documented
    assert not missing, f"settings missing from {EXAMPLE.name}: {sorted(missing)}"


def test_example_config_loads_to_the_defaults() -> None:
    settings = config.load(EXAMPLE, environ={})
    for f in fields(config.Settings):
        if f.name == "listeners":
            continue
        assert getattr(settings, f.name) == f.default, f.name


def test_start_help_lists_every_setting() -> None:
    parser = build_parser()
    start = parser._subparsers._group_actions[0].choices["start"]  # type: ignore[union-attr]
    help_text = start.format_help()
    for f in fields(config.Settings):
        if f.name == "listeners":
            continue
        assert "--" + f.name.replace("_", "-") in help_text, f.name
