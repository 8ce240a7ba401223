"""Loopback copies of the providers' documented APIs, by provider name ("module:Class")."""

from __future__ import annotations

from importlib import import_module

FAKES: dict[str, str] = {
    "wavespeed": "tests.fakes.providers.wavespeed:FakeWaveSpeed",
    "atlascloud": "tests.fakes.providers.atlascloud:FakeAtlasCloud",
    "runcomfy": "tests.fakes.providers.runcomfy:FakeRunComfy",
    "evolink": "tests.fakes.providers.evolink:FakeEvoLink",
    "fal": "tests.fakes.providers.fal:FakeFal",
    "kling": "tests.fakes.providers.kling:FakeKling",
}


def fake_class(name: str) -> type:
    module, _, cls = FAKES[name].partition(":")
    return getattr(import_module(module), cls)  # type: ignore[no-any-return]
