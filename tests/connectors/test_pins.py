"""The pin store contract: first sight pins, only an acknowledgement moves a pin."""

from __future__ import annotations

from fibric import connectors
from fibric.connectors import pinning


def test_record_new_never_overwrites_and_acknowledge_does() -> None:
    store = connectors.MemoryPinStore()

    store.record_new("t1", "shop", {"a": "1", "b": "2"})
    store.record_new("t1", "shop", {"a": "changed", "c": "3"})
    assert store.load("t1", "shop") == {"a": "1", "b": "2", "c": "3"}

    store.acknowledge("t1", "shop", {"a": "changed"})
    assert store.load("t1", "shop") == {"a": "changed", "b": "2", "c": "3"}


def test_pins_are_per_tenant_and_connector_and_can_be_forgotten() -> None:
    store = connectors.MemoryPinStore()
    store.record_new("t1", "shop", {"a": "1"})
    store.record_new("t2", "shop", {"a": "2"})

    store.forget("t1", "shop")

    assert store.load("t1", "shop") == {}
    assert store.load("t2", "shop") == {"a": "2"}


def test_changed_tools_are_pinned_tools_with_another_hash() -> None:
    assert pinning.changed_tools({"a": "1", "b": "2"}, {"a": "1", "b": "X", "new": "9"}) == ["b"]
    assert pinning.changed_tools({"gone": "1"}, {}) == []
