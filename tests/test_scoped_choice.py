"""ScopedChoice: blocks over the process choice over the environment over the default."""

import pytest

from jsnet_tf.errors import UserError
from jsnet_tf.scoped_choice import ScopedChoice


class UnknownColourError(UserError, ValueError):
    pass


@pytest.fixture
def colour(monkeypatch):
    monkeypatch.delenv("JSNET_TEST_COLOUR", raising=False)
    defaults = iter(["red", "blue"])  # the default is asked each time nothing else chose
    return ScopedChoice("colour", ("red", "blue", "green"), "JSNET_TEST_COLOUR", lambda: next(defaults), UnknownColourError)


def test_precedence_block_then_process_then_environment_then_default(colour, monkeypatch):
    assert colour.current() == "red"
    assert colour.current() == "blue"
    monkeypatch.setenv("JSNET_TEST_COLOUR", " Green ")
    assert colour.current() == "green"
    colour.set("red", "set_colour")
    assert colour.current() == "red"
    with colour.use("blue", "use_colour"):
        with colour.use("green", "use_colour"):
            assert colour.current() == "green"
        assert colour.current() == "blue"
    assert colour.current() == "red"
    colour.set(None, "set_colour")
    assert colour.current() == "green"


def test_an_unknown_name_is_one_line_naming_its_source(colour, monkeypatch):
    with pytest.raises(UnknownColourError, match="^use_colour: unknown colour 'pink'; choose one of red, blue, green$"):
        with colour.use("pink", "use_colour"):
            pass
    monkeypatch.setenv("JSNET_TEST_COLOUR", "pink")
    with pytest.raises(UnknownColourError, match="^JSNET_TEST_COLOUR: unknown colour 'pink'"):
        colour.current()
