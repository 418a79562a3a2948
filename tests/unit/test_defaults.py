"""Per-user default folders: the user's XDG folders, else a private <temp>/s3sync-<uid>, never shared."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from s3sync.errors import ConfigurationError
from s3sync.settings import Settings


@pytest.fixture
def private_temp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """tempfile.gettempdir() points at a fresh folder; no XDG variables."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    return temp


def test_xdg_variables_are_used(monkeypatch, tmp_path, private_temp):
    """$XDG_STATE_HOME holds the state, $XDG_DATA_HOME the upload and mirror folders."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "da"))
    s = Settings(_env_file=None)
    assert s.state_path == tmp_path / "st/s3sync/state.db"
    assert s.upload_dir_path == tmp_path / "da/s3sync/upload"
    assert s.local_path == tmp_path / "da/s3sync/mirror"


def test_relative_xdg_value_is_ignored(monkeypatch, tmp_path, private_temp):
    """A relative XDG value is invalid (XDG spec): the home folder's default applies."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    assert Settings(_env_file=None).state_path == home / ".local/state/s3sync/state.db"


def test_two_homes_share_nothing(monkeypatch, tmp_path, private_temp):
    """Two users (two HOMEs) get disjoint default folders, each under its own home."""
    paths = []
    for name in ("alice", "bob"):
        home = tmp_path / name
        home.mkdir()
        monkeypatch.setenv("HOME", str(home))
        s = Settings(_env_file=None)
        mine = {s.state_path, s.upload_dir_path, s.local_path}
        assert all(home in p.parents for p in mine)
        paths.append(mine)
    assert not paths[0] & paths[1]


@pytest.mark.parametrize("home", ["/nonexistent-s3sync-home", "/", "relative"])
def test_unusable_home_falls_back_to_a_private_uid_folder(monkeypatch, private_temp, home):
    """No usable home (missing, not owned, relative): <temp>/s3sync-<uid>, created 0700."""
    monkeypatch.setenv("HOME", home)
    if home == "/" and os.getuid() == 0:
        pytest.skip("root owns /: it is a usable home for root")
    s = Settings(_env_file=None)
    root = private_temp / f"s3sync-{os.getuid()}"
    assert s.state_path == root / "state.db"
    assert s.upload_dir_path == root / "upload"
    assert s.local_path == root / "mirror"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_home_owned_by_someone_else_is_not_used(monkeypatch, tmp_path, private_temp):
    """A HOME that another user owns (say HOME=/tmp) is not this user's: the private folder is used."""
    if os.getuid() != 0:
        pytest.skip("needs root to give a folder to another uid")
    home = tmp_path / "shared"
    home.mkdir()
    os.chown(home, 54321, 54321)
    monkeypatch.setenv("HOME", str(home))
    assert Settings(_env_file=None).state_path == private_temp / "s3sync-0" / "state.db"


def test_fallback_folder_of_someone_else_is_refused(monkeypatch, private_temp):
    """A <temp>/s3sync-<uid> made by another user (or writable by others) is refused with one line."""
    monkeypatch.setenv("HOME", "/nonexistent-s3sync-home")
    root = private_temp / f"s3sync-{os.getuid()}"
    root.mkdir(mode=0o777)
    root.chmod(0o777)  # group/other writable: anyone could plant files in it
    with pytest.raises(ConfigurationError, match=r"not a private folder"):
        Settings(_env_file=None)


def test_explicit_folders_need_no_default(monkeypatch, tmp_path, private_temp):
    """With the three folders set, no default folder is looked at or created."""
    monkeypatch.setenv("HOME", "/nonexistent-s3sync-home")
    Settings(
        _env_file=None,
        state_path=tmp_path / "s.db",
        upload_dir_path=tmp_path / "u",
        local_path=tmp_path / "m",
    )
    assert not any(private_temp.iterdir())
