"""The board registry: the names the CLI and MachineConfig accept are the boards that exist."""
from __future__ import annotations

import pytest

from hvm.boards import BOARD_NAMES, _boards, board_for
from hvm.errors import ConfigError


def test_every_accepted_name_is_a_board_and_every_board_is_accepted():
    assert set(BOARD_NAMES) == set(_boards())
    for name in BOARD_NAMES:
        assert board_for(name).name == name


def test_an_unknown_board_is_a_usage_error():
    with pytest.raises(ConfigError, match="unknown machine 'q35'"):
        board_for("q35")
