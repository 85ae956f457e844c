"""Every backend implements its declared protocol (populax.backends.Backend / BlockBackend): each method exists
and accepts the protocol's parameters, so the driver, `populax eval`, `--video` and Ray workers can call any."""

import inspect

import pytest

from populax.backends import Backend, BlockBackend
from populax.backends.cluster import RayBackend
from populax.backends.compiled import CompiledBackend
from populax.backends.host import HostBackend


def protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    members = {}
    for klass in reversed(protocol.__mro__):
        for name, value in vars(klass).items():
            if callable(value) and not name.startswith("_"):
                members[name] = inspect.signature(value)
    return members


@pytest.mark.parametrize("backend, protocol", [(CompiledBackend, BlockBackend), (HostBackend, BlockBackend),
                                               (RayBackend, Backend)])
def test_each_backend_implements_its_protocol(backend, protocol):
    methods = protocol_methods(protocol)
    assert {"advance", "evaluate", "member_returns", "member_actor"} <= set(methods)
    for name, declared in methods.items():
        assert callable(getattr(backend, name, None)), f"{backend.__name__} has no {name}"
        actual = inspect.signature(getattr(backend, name)).parameters
        for parameter in declared.parameters.values():
            assert parameter.name in actual or any(p.kind is p.VAR_KEYWORD for p in actual.values()), \
                f"{backend.__name__}.{name} does not take {parameter.name!r}"
    for attribute in ("kind", "chunk_steps", "num_chunks"):
        assert attribute in Backend.__annotations__


def test_the_protocol_check_catches_a_backend_missing_a_method():
    class Incomplete:
        def advance(self, population, chunk, should_stop=None): ...

    missing = [name for name in protocol_methods(Backend) if not callable(getattr(Incomplete, name, None))]
    assert "evaluate" in missing and "member_actor" in missing and "advance" not in missing
