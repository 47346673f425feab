"""Codec kinds: the registry, dispatch on 'kind', old factorized dicts without 'kind'."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featcomp.entropy import EntropyCodec, FrozenCodec, TemporalCodec, codec_from_dict, codec_kind, codec_kinds
from featcomp.errors import RegistryError
from tests.entropy.test_temporal import random_codec


def test_dispatch_and_json_round_trip():
    rng = np.random.default_rng(0)
    fact = EntropyCodec.fit(rng.integers(-5, 5, (50, 4)))
    temp = random_codec(rng, 4)
    assert {"factorized", "temporal"} <= set(codec_kinds())
    for c, kind, cls in ((fact, "factorized", EntropyCodec), (temp, "temporal", TemporalCodec)):
        assert isinstance(c, FrozenCodec) and codec_kind(c) == kind
        d = json.loads(json.dumps(c.to_dict()))
        back = codec_from_dict(d)
        assert type(back) is cls and back.digest == c.digest
        k = rng.integers(-30, 30, (9, 4)).astype(np.int32)
        np.testing.assert_array_equal(back.decompress_symbols(c.compress_symbols(k)), k)
    assert "kind" not in fact.to_dict()  # the factorized format is unchanged


def test_unknown_kind_raises():
    with pytest.raises(RegistryError):
        codec_from_dict({"kind": "nope"})
