"""Outputs appear whole or not at all."""

import json
import os

import pytest

from nanogerman.atomic import atomic_path, write_json


def test_file_is_renamed_into_place_only_on_success(tmp_path):
    target = tmp_path / "out" / "a.txt"
    with atomic_path(target) as temporary:
        temporary.write_text("whole")
        assert not target.exists()
    assert target.read_text() == "whole"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_failure_leaves_no_trace_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_directory_replaces_the_old_one(tmp_path):
    target = tmp_path / "tok"
    target.mkdir()
    (target / "stale.json").write_text("{}")
    with atomic_path(target, directory=True) as temporary:
        (temporary / "tokenizer.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["tokenizer.json"]
    with pytest.raises(ValueError):
        with atomic_path(target, directory=True) as temporary:
            raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_write_json_is_sorted_and_readable(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": "ä"})
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == '{\n  "a": "ä",\n  "b": 1\n}\n'
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": "ä", "b": 1}


def test_directory_gets_the_usual_mode_not_mkdtemp_s_private_one(tmp_path):
    with atomic_path(tmp_path / "folder", directory=True) as temporary:
        (temporary / "file").write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask
