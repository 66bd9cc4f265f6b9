"""``ferrymq users|acl|apps`` without a broker: no database is refused, ``--create`` makes one."""

from __future__ import annotations

import pytest

from ferrymq.cli import main


@pytest.mark.parametrize(
    "args",
    [
        ("users", "add", "alice", "-p", "x"),
        ("users", "list"),
        ("acl", "add", "#", "pub", "deny"),
        ("acl", "list"),
        ("apps", "add", "scripts"),
        ("apps", "list"),
    ],
)
def test_commands_refuse_a_missing_database(tmp_path, capsys, args: tuple[str, ...]) -> None:
    wrong = tmp_path / "typo"
    assert main([*args, "--data-dir", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "no database" in err and str(wrong.resolve()) in err and "--create" in err
    assert not (wrong / "ferrymq.db").exists()


def test_create_makes_a_new_database(tmp_path, capsys) -> None:
    data = tmp_path / "fresh"
    assert main(["users", "add", "alice", "-p", "x", "--data-dir", str(data), "--create"]) == 0
    assert (data / "ferrymq.db").exists()
    assert main(["users", "list", "--data-dir", str(data)]) == 0
    captured = capsys.readouterr()
    assert "alice" in captured.out and str((data / "ferrymq.db").resolve()) in captured.err
