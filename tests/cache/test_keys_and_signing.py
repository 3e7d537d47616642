"""Tape-cache keys render their components readably and distinctly; sealed entries refuse any change."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derivd import __version__
from derivd.cache.keys import TapeKey, render_transform
from derivd.cache.signing import MAC_BYTES, TamperedEntry, open_entry, seal
from derivd.dsl import InputSpec


def test_a_key_names_every_component():
    source = "sum(x[idx] ** 2)"
    specs = {"x": InputSpec((3,), "f8", "at"), "idx": InputSpec((5,), "i8", "const")}
    key = TapeKey.for_program(source, specs).with_transform(("vjp", ("x",), None))
    prog = hashlib.sha256(source.encode()).hexdigest()[:32]
    assert key.render() == f"derivd:tape:v{__version__}:prog={prog}:sig=idx:i8[5]:const|x:f8[3]:xf=vjp([x];-)"
    assert TapeKey.for_program(source, specs).render("p").endswith(":xf=lower")
    assert render_transform(("jvp", ("x", "y"), (8,))) == "jvp([x,y];[8])"
    assert render_transform(("eval",)) == "eval()"


def test_a_huge_signature_renders_as_its_hash():
    specs = {f"input_{i}": InputSpec((i, 2), "f8", "at") for i in range(100)}
    text = TapeKey.for_program("0", specs).render()
    assert ":sig=sha256-" in text and len(text) < 200


names = st.sampled_from(["x", "y", "A", "idx"])
shapes = st.lists(st.integers(0, 12), max_size=3).map(tuple)
signatures = st.dictionaries(names, st.tuples(shapes, st.sampled_from(["f8", "i8", "b1"]),
                                              st.sampled_from(["at", "const"])), min_size=1)
transforms = st.one_of(st.none(), st.tuples(st.sampled_from(["eval", "jvp", "vjp", "hvp"]),
                                            st.lists(names, max_size=3).map(tuple),
                                            st.one_of(st.none(), st.tuples(st.integers(1, 64)))))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["sum(x)", "sum(x) + 0", "prod(y)"]), signatures, transforms,
       st.sampled_from(["sum(x)", "prod(y)"]), signatures, transforms)
def test_different_components_render_different_keys(s1, sig1, xf1, s2, sig2, xf2):
    def key(s, sig, xf):
        k = TapeKey.for_program(s, {n: InputSpec(*v) for n, v in sig.items()})
        return k if xf is None else k.with_transform(xf)

    a, b = key(s1, sig1, xf1), key(s2, sig2, xf2)
    assert (a.render() == b.render()) == (a == b)


SECRET = b"a test key"


def test_a_sealed_entry_opens_to_its_payload():
    entry = seal(SECRET, "k", b'{"nodes": []}')
    assert len(entry) == MAC_BYTES + 13
    assert open_entry(SECRET, "k", entry) == b'{"nodes": []}'


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_flipped_bit_is_refused(payload, data):
    entry = bytearray(seal(SECRET, "k", payload))
    i = data.draw(st.integers(0, len(entry) - 1))
    entry[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(TamperedEntry):
        open_entry(SECRET, "k", bytes(entry))


def test_another_key_or_another_place_is_refused():
    entry = seal(SECRET, "derivd:tape:a", b"payload")
    with pytest.raises(TamperedEntry):
        open_entry(b"another key", "derivd:tape:a", entry)
    with pytest.raises(TamperedEntry):  # a valid entry copied under another key
        open_entry(SECRET, "derivd:tape:b", entry)
    with pytest.raises(TamperedEntry):
        open_entry(SECRET, "derivd:tape:a", entry[:10])
    with pytest.raises(TamperedEntry):
        open_entry(SECRET, "derivd:tape:a", entry + b"x")
