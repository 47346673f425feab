"""One serialization of frozen codecs (issue 15): codec_to_bytes/codec_from_bytes and
codec_to_dict/codec_from_dict dispatch through the kinds registry; every golden codec reads and re-encodes
byte for byte through them, and the store's table strings and the model file use the same pair."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import pytest

from featcomp.entropy import (
    EntropyCodec,
    HyperpriorCodec,
    TemporalCodec,
    codec_from_bytes,
    codec_from_dict,
    codec_to_bytes,
    codec_to_dict,
)
from featcomp.errors import CodecError, RegistryError
from featcomp.store.codec import FeatcompANSCodec, decode_tables, encode_tables

GOLD = Path(__file__).resolve().parents[1] / "fixtures" / "entropy"
CODECS = [("codec.bin", "factorized", EntropyCodec), ("temporal_codec.bin", "temporal", TemporalCodec),
          ("temporal_codec_layout2.bin", "temporal", TemporalCodec),
          ("temporal_codec_layout3.bin", "temporal", TemporalCodec),
          ("hyperprior_codec.bin", "hyperprior", HyperpriorCodec),
          ("hyperprior_codec_layout2.bin", "hyperprior", HyperpriorCodec),
          ("hyperprior_codec_layout3.bin", "hyperprior", HyperpriorCodec)]


@pytest.mark.parametrize("fname,kind,cls", CODECS)
def test_golden_codecs_round_trip_through_the_one_pair(fname, kind, cls):
    data = (GOLD / fname).read_bytes()
    codec = codec_from_bytes(data, kind)
    assert type(codec) is cls and codec_to_bytes(codec) == data == codec.to_bytes()
    # the dict form: the kind's own dict plus "kind"; read back to the same bytes
    d = codec_to_dict(codec)
    assert d["kind"] == kind and {k: v for k, v in d.items() if k != "kind"} == {
        k: v for k, v in codec.to_dict().items() if k != "kind"}
    back = codec_from_dict(json.loads(json.dumps(d)))
    assert codec_to_bytes(back) == data
    # the store's tables string is base64(zlib(codec_to_bytes)) and reads back through codec_from_bytes
    tables = encode_tables(codec)
    assert zlib.decompress(base64.b64decode(tables)) == data
    assert codec_to_bytes(decode_tables(tables, codec.digest, kind)) == data
    zc = FeatcompANSCodec.from_dict(FeatcompANSCodec.from_codec(codec).to_dict())
    assert codec_to_bytes(zc.codec) == data


def test_the_implicit_kind_and_mismatches():
    data = (GOLD / "codec.bin").read_bytes()
    assert codec_to_bytes(codec_from_bytes(data)) == data  # no kind: the implicit factorized kind
    d = EntropyCodec.from_bytes(data).to_dict()
    assert "kind" not in d and codec_from_dict(d).digest == EntropyCodec.from_bytes(data).digest  # old dicts
    with pytest.raises(CodecError):
        codec_from_bytes(data, "temporal")  # factorized bytes are not a temporal codec
    with pytest.raises(CodecError):
        codec_from_bytes(data[:-1], "factorized")  # the sha256 no longer matches
    with pytest.raises(RegistryError):
        codec_from_bytes(data, "no-such-kind")
    with pytest.raises(CodecError):
        codec_to_bytes(object())
    with pytest.raises(CodecError):
        codec_from_dict([1, 2])
