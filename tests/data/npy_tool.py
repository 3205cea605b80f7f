# npy_tool.py: writes reference .npy files with NumPy and checks files written by ad_npy_save.
import sys

import numpy as np


def make(d):
    np.save(d + "/be_f8.npy", (np.arange(6).reshape(2, 3) * 0.5 - 1).astype(">f8"))
    np.save(d + "/be_f4.npy", (np.arange(4) * 0.25 + 1e-3).astype(">f4"))
    np.save(d + "/le_f4_3d.npy", (np.arange(24).reshape(2, 3, 4) / 3).astype("<f4"))
    np.save(d + "/le_i2.npy", np.array([-3, 0, 7, 32767], dtype="<i2"))
    np.save(d + "/be_u4.npy", np.array([1, 4000000000], dtype=">u4"))
    np.save(d + "/bool.npy", np.array([True, False, True]))
    np.save(d + "/scalar.npy", np.float64(2.5))
    with open(d + "/v2_f8.npy", "wb") as f:
        np.lib.format.write_array(f, np.array([[1.5, -2.0]]), version=(2, 0))
    with open(d + "/fortran.npy", "wb") as f:
        np.lib.format.write_array(f, np.asfortranarray(np.ones((2, 3))), version=(1, 0))


def check(path):
    a = np.load(path)
    want = (np.arange(12, dtype="<f4").reshape(3, 4) / 8).astype("<f4")
    if a.dtype != want.dtype or a.shape != want.shape or not np.array_equal(a, want):
        print("npy_tool: %s holds %r %r" % (path, a.dtype, a))
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
        sys.exit(0)
    sys.exit(check(sys.argv[2]))
