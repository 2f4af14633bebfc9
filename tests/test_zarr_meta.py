"""Conformance of shadows' Zarr metadata reader with zarr-python's own: for every data type and codec
chain the installed zarr writes (format 2 and 3, sharded or not), the shape, dtype, chunking and fill
value a shadow's metadata reader reports equal what ``zarr.open_array`` reports.

Strings are the one deliberate difference: shadows reads every text type as ``object`` (as anndata
gives strings), where zarr 3 reports its own string dtypes.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from shadows.backends.zarr_meta import ZarrMetadata

TEXT = {"string", "str", "variable_length_utf8", "fixed_length_utf32", "bytes", "variable_length_bytes"}
DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
          "float64", "complex64", "complex128", "<M8[ns]", "<m8[s]", "<U6", "|S4", "str",
          [("a", "<i4"), ("b", "<f8")]]


def _fill(dtype: np.dtype):
    if dtype.kind == "M":
        return np.datetime64("2020-01-02", "ns")
    if dtype.kind == "m":
        return np.timedelta64(7, "s")
    if dtype.kind in "US":
        return dtype.type("ab")
    if dtype.kind == "V":
        return np.array((3, 1.5), dtype=dtype)[()]
    if dtype.kind == "b":
        return True
    if dtype.kind == "O":
        return "x"
    return dtype.type(3)


CASES = [(fmt, dtype, sharded) for fmt in (2, 3) for dtype in DTYPES for sharded in (False, True)
         if not (sharded and fmt == 2)]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One store per format, each array of a case under its own name; cases zarr cannot write are noted."""
    root = tmp_path_factory.mktemp("zarr_meta")
    made, refused = {}, {}
    for fmt in (2, 3):
        group = zarr.open_group(root / f"v{fmt}.zarr", mode="w", zarr_format=fmt)
        for i, (case_fmt, dtype, sharded) in enumerate(CASES):
            if case_fmt != fmt:
                continue
            numpy_dtype = np.dtype(str) if dtype == "str" else np.dtype(dtype)
            kwargs = {"shards": (20,)} if sharded else {}
            try:
                group.create_array(f"a{i}", shape=(40,), chunks=(10,), dtype=dtype if dtype == "str" else numpy_dtype,
                                   fill_value=_fill(numpy_dtype), **kwargs)
            except Exception as error:
                refused[i] = f"{type(error).__name__}: {error}"
                continue
            made[i] = root / f"v{fmt}.zarr"
    return made, refused


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"v{f}-{d if isinstance(d, str) else 'record'}"
                                                          f"{'-sharded' if s else ''}" for f, d, s in CASES])
def test_metadata_reader_agrees_with_zarr(stores, case):
    made, refused = stores
    if case in refused:
        pytest.skip(f"zarr {zarr.__version__} does not write it: {refused[case]}")
    path = made[case]
    expected = zarr.open_array(path / f"a{case}", mode="r")
    got = ZarrMetadata(path)[f"a{case}"]
    assert got.shape == expected.shape
    assert got.chunks == (expected.shards or expected.chunks)
    spec = got.meta["data_type"] if got.meta.get("zarr_format") == 3 else got.meta["dtype"]
    name = spec.get("name") if isinstance(spec, dict) else spec
    text = (isinstance(name, str) and name in TEXT) or expected.dtype.kind in "OT"
    assert got.dtype == (np.dtype(object) if text else expected.dtype)
    fill, want = got.fill_value, expected.fill_value
    if isinstance(want, np.ndarray | np.void) or np.ndim(want):
        np.testing.assert_array_equal(np.asarray(fill), np.asarray(want))
    else:
        assert fill == want and type(fill) is type(want), (fill, want)
