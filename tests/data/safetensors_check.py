# safetensors_check.py: parses a checkpoint written by nn_safetensors_save with json/struct/numpy only
# (and the safetensors package when it is installed) and checks its layout and values.
import json
import re
import struct
import sys

import numpy as np

DT = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
WANT = {
    "w": ("F32", [3, 4], np.arange(12, dtype=np.float64).reshape(3, 4) * 0.25 - 1),
    "b": ("F64", [4], np.arange(4, dtype=np.float64) / 3),
    "s": ("F64", [], np.array(7.5)),
    "e": ("F32", [0, 5], np.zeros((0, 5))),
}


def main(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, "header length %d not a multiple of 8" % n
    text = raw[8:8 + n].decode("utf-8")
    assert text[0] == "{" and text.rstrip(" ") == text.rstrip(), "header padding"
    hdr = json.loads(text)
    data = raw[8 + n:]
    md = hdr.pop("__metadata__")
    assert md["format"] == "autodiff-checkpoint" and md["version"] == "1", md
    assert md["note"] == "made by test_safetensors", md
    assert set(hdr) == set(WANT), sorted(hdr)
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1]) for v in hdr.values())
    pos = 0
    for b, e in spans:
        assert b == pos, "not contiguous"
        pos = e
    assert pos == len(data), "data not covered exactly"
    for name, (dtype, shape, values) in WANT.items():
        ent = hdr[name]
        assert ent["dtype"] == dtype and ent["shape"] == shape, (name, ent)
        b, e = ent["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=DT[dtype]).reshape(shape)
        assert np.array_equal(arr, values.astype(DT[dtype])), (name, arr)
        assert re.fullmatch(r"[0-9a-f]{16}", md["xxh3:" + name]), md
    assert re.fullmatch(r"[0-9a-f]{16}", md["xxh3:__table__"]), md
    try:
        from safetensors.numpy import load_file
    except ImportError:
        return 0
    loaded = load_file(path)
    for name, (dtype, shape, values) in WANT.items():
        assert np.array_equal(loaded[name], values.astype(DT[dtype]).reshape(shape)), name
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
