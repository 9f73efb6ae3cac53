"""A media type's name is checked where a plugin registers it: it is written in farm.toml, listed
comma-separated in $FARM_MEDIA_TYPES and sent to agents, so "Check Sum!" or "a,b" is refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from farm.errors import PluginError
from farm.hookspecs import hookimpl
from farm.mediatype import MediaType
from farm.plugins import PluginInfo, Plugins


def plugin_of(name: str) -> object:
    kind = type("Named", (MediaType,), {"name": name})

    class _Plugin:
        @staticmethod
        @hookimpl
        def farm_register_media_types(register: Any) -> None:
            register(kind)

    return _Plugin()


@pytest.mark.parametrize("name", ["Check Sum!", "a,b", "-x", "1st", "x" * 65, "tiles/z"])
def test_a_bad_media_type_name_is_refused_naming_it_and_its_plugin(name: str) -> None:
    plugins = Plugins()
    with pytest.raises(PluginError, match=r"plugin odd registered a media type named ") as caught:
        plugins.register(plugin_of(name), PluginInfo(name="odd", version="0", module=__name__))
    assert repr(name) in str(caught.value)
    assert name not in plugins.media_types._found  # nothing of it registered


@pytest.mark.parametrize("name", ["checksum", "Frames2", "exr_seq", "geo-tiles", "v1.2"])
def test_a_plain_media_type_name_registers(name: str) -> None:
    plugins = Plugins()
    plugins.register(plugin_of(name), PluginInfo(name="ok", version="0", module=__name__))
    assert name in plugins.media_types._found
