import pytest

from vboard_rig import VirtualBoard


@pytest.fixture
def vboard(tmp_path):
    """A running virtual board with its flash in tmp_path/flash."""
    with VirtualBoard(tmp_path / "flash") as b:
        yield b
