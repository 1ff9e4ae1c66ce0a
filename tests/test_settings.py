"""engine.core.settings: the one reading of the workbench's environment variables and roots."""

from pathlib import Path

import pytest

from engine.core.errors import UserError
from engine.core.settings import CACHE_ENV, IDLE_EXIT_ENV, settings


@pytest.mark.parametrize(
    "value, expected",
    [(None, "cache"), ("", "cache"), ("   ", "cache"), ("/srv/wb", "/srv/wb"), ("c2", "c2")],
)
def test_cache_dir_unset_or_empty_means_the_default(monkeypatch, value, expected):
    from engine.store.cache import default_cache_dir

    if value is None:
        monkeypatch.delenv(CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(CACHE_ENV, value)
    assert settings().cache_dir == Path(expected)
    assert default_cache_dir() == Path(expected)


def test_an_explicit_environment_is_read_instead_of_the_process_one(monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "from-process")
    assert settings({CACHE_ENV: "given"}).cache_dir == Path("given")
    assert settings({}).cache_dir == Path("cache")


@pytest.mark.parametrize(
    "value, expected", [(None, 600.0), ("", 600.0), ("0", 0.0), ("2.5", 2.5), (" 30 ", 30.0)]
)
def test_idle_exit(value, expected):
    env = {} if value is None else {IDLE_EXIT_ENV: value}
    assert settings(env).idle_exit_s == expected


@pytest.mark.parametrize(
    "value, message",
    [("soon", "is not a number of seconds"), ("-1", "must be 0"), ("nan", "must be 0")],
)
def test_a_bad_idle_exit_is_one_line_naming_the_variable(value, message):
    with pytest.raises(UserError, match=message) as e:
        _ = settings({IDLE_EXIT_ENV: value}).idle_exit_s
    assert IDLE_EXIT_ENV in str(e.value) and "\n" not in str(e.value)


def test_distributed_rank_and_world_size():
    assert (settings({}).world_size, settings({}).rank) == (1, 0)
    env = {"WORLD_SIZE": "4", "RANK": "3"}
    assert (settings(env).world_size, settings(env).rank) == (4, 3)
    with pytest.raises(UserError, match="WORLD_SIZE='x' is not an integer"):
        _ = settings({"WORLD_SIZE": "x"}).world_size


def test_checkpoint_roots_are_the_folders_that_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert settings().checkpoint_roots == []
    (tmp_path / "runs").mkdir()
    (tmp_path / "checkpoints").write_text("a file, not a folder")
    assert settings().checkpoint_roots == [(tmp_path / "runs").resolve()]
    (tmp_path / "checkpoints").unlink()
    (tmp_path / "checkpoints").mkdir()
    assert settings().checkpoint_roots == [
        (tmp_path / "checkpoints").resolve(),
        (tmp_path / "runs").resolve(),
    ]


def test_engine_roots_default_to_the_settings(tmp_path, monkeypatch):
    from engine.core import roots

    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    monkeypatch.setattr(roots, "_cache", None)
    monkeypatch.setattr(roots, "_roots", [])
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert roots.cache_dir() == tmp_path / "c"
    roots.configure(tmp_path / "other")
    assert roots.allowed() == [tmp_path / "other", tmp_path / "checkpoints"]
