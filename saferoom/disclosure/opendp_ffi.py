"""One OpenDP measurement invoked many times, through OpenDP's C interface rather than its Python bindings.

Why: a DP quantile draws once or twice per released cell (``dp._draws``), thousands of draws per release. Each call of a
measurement through OpenDP's Python bindings spends 60-80 us converting its argument and result in Python (type
strings parsed, imports looked up, wrapper objects built and freed), holding the GIL, while the draw itself, in
Rust and without the GIL, takes 10-100 us: so the bindings, not the samplers, set the time, and threads could not
share it out. Here the same measurement (built, checked and mapped by the bindings as before) is invoked with the
same four calls the bindings make (the vector loaded into an ``AnyObject``, the measurement invoked, its result
read and both objects freed), set up once: the samplers, their randomness and their output are OpenDP's, unchanged.

The same holds, once per release, for the cells' noisy counts (``MapInvoker``): the bindings turn the map of cell
to count, tens of thousands of entries, into Python integers and back, one at a time (0.2-0.3 s at 72,000 cells);
here the keys and counts go to OpenDP as two int64 arrays, and the released ones come back as two.

Only for measurements from ``Vec<i64>`` to ``usize`` (report noisy min/max, ``IndexInvoker``) and from
``HashMap<i64, i64>`` to ``HashMap<i64, i64>`` (the Laplace threshold, ``MapInvoker``): checked when an invoker is
made. An error in the library raises OpenDP's exception, and frees what was allocated.
"""

from __future__ import annotations

import abc
import ctypes
import functools
from typing import Any

import numpy as np
from opendp import _lib
from opendp.mod import OpenDPException

__all__ = ["IndexInvoker", "MapInvoker"]

_VEC_I64 = b"Vec<i64>"
_MAP_I64 = b"HashMap<i64, i64>"
_c_size_p = ctypes.POINTER(ctypes.c_size_t)
_slice_p = ctypes.POINTER(_lib.FfiSlice)
_pointers_p = ctypes.POINTER(ctypes.c_void_p)


@functools.cache
def _library() -> ctypes.CDLL:
    """OpenDP's library with function objects of our own, set up once: the bindings reset ``argtypes`` on theirs at
    each call, which would race with ours. Loading the same file again returns the same library, not a copy."""
    lib = ctypes.CDLL(str(_lib.lib_path))
    for name, args in (
        ("opendp_data__slice_as_object", [_slice_p, ctypes.c_char_p]),
        ("opendp_core__measurement_invoke", [ctypes.c_void_p, ctypes.c_void_p]),
        ("opendp_data__object_as_slice", [ctypes.c_void_p]),
        ("opendp_data__object_type", [ctypes.c_void_p]),
        ("opendp_data__slice_free", [ctypes.c_void_p]),
        ("opendp_data__object_free", [ctypes.c_void_p]),
        ("opendp_data__str_free", [ctypes.c_void_p]),
    ):
        function = getattr(lib, name)
        function.argtypes = args
        function.restype = _lib.FfiResult
    return lib


class _Invoker(abc.ABC):
    """A measurement to invoke through the C interface, its argument's and its release's types checked once (a
    release on a one-entry probe). Safe to call from several threads."""

    _takes = ""  # the measurement's input carrier type
    _releases = b""  # the type of its release, as OpenDP names it

    def __init__(self, measurement: Any) -> None:
        if measurement.input_carrier_type != self._takes:
            raise TypeError(f"expected a measurement of {self._takes}, got {measurement.input_carrier_type}")
        self._measurement = measurement  # kept alive: the pointer below is into it
        self._pointer = ctypes.cast(measurement, ctypes.c_void_p)
        self._lib = _library()
        released = self._probe()
        try:
            name = _type_name(released)
        finally:
            _ok(self._lib.opendp_data__object_free(released))
        if name != self._releases:
            raise TypeError(f"expected a measurement releasing {self._releases.decode()}, got {name!r}")

    @abc.abstractmethod
    def _probe(self) -> int:
        """A release on a one-entry argument, an ``AnyObject`` the caller frees."""


class IndexInvoker(_Invoker):
    """Calls ``measurement`` (``Vec<i64>`` -> ``usize``) on contiguous int64 arrays: ``invoker(row)`` is
    ``int(measurement(row))`` without the bindings' per-call work."""

    _takes, _releases = "Vec<i64>", b"usize"

    def _probe(self) -> int:
        return self._invoke(np.zeros(1, dtype=np.int64))

    def __call__(self, row: np.ndarray) -> int:
        _check_vector(row)
        released = self._invoke(row)
        try:
            raw = _ok(self._lib.opendp_data__object_as_slice(released))
            try:
                value = ctypes.cast(ctypes.cast(raw, _slice_p).contents.ptr, _c_size_p).contents.value
            finally:
                _ok(self._lib.opendp_data__slice_free(raw))
        finally:
            _ok(self._lib.opendp_data__object_free(released))
        return int(value)

    def _invoke(self, row: np.ndarray) -> int:
        """The measurement's release on ``row``, an ``AnyObject`` the caller frees. Its argument is a copy of
        ``row`` made by OpenDP (``slice_as_object`` copies the slice into a ``Vec``), freed here."""
        argument = _vector_object(row)
        try:
            return _ok(self._lib.opendp_core__measurement_invoke(self._pointer, argument))
        finally:
            _ok(self._lib.opendp_data__object_free(argument))


class MapInvoker(_Invoker):
    """Calls ``measurement`` (``HashMap<i64, i64>`` -> ``HashMap<i64, i64>``) on a map given as two int64 arrays:
    ``invoker(keys, values)`` is ``measurement(dict(zip(keys, values)))`` as the arrays of its keys and values
    (in OpenDP's order, which is arbitrary), without converting each entry in Python."""

    _takes, _releases = "HashMap<i64, i64>", _MAP_I64

    def _probe(self) -> int:
        one = np.zeros(1, dtype=np.int64)
        return self._invoke(one, one)

    def __call__(self, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _check_vector(keys)
        _check_vector(values)
        if len(keys) != len(values):
            raise ValueError("expected as many keys as values")
        if len(np.unique(keys)) != len(keys):
            raise ValueError("expected distinct keys")  # a map would keep one entry of each key, silently
        released = self._invoke(keys, values)
        try:
            raw = _ok(self._lib.opendp_data__object_as_slice(released))
            try:
                pair = ctypes.cast(raw, _slice_p).contents
                if pair.len != 2:  # pragma: no cover - OpenDP's layout of a map: its keys' and values' vectors
                    raise TypeError("expected a map as two vectors")
                parts = ctypes.cast(pair.ptr, _pointers_p)
                # Two AnyObjects made for this slice and owned by it (OpenDP's bindings leak them; the two
                # pointers' own 16-byte buffer cannot be freed from here, which leaks 40 bytes a call).
                try:
                    return _vector_copy(parts[0]), _vector_copy(parts[1])
                finally:
                    _ok(self._lib.opendp_data__object_free(parts[0]))
                    _ok(self._lib.opendp_data__object_free(parts[1]))
            finally:
                _ok(self._lib.opendp_data__slice_free(raw))
        finally:
            _ok(self._lib.opendp_data__object_free(released))

    def _invoke(self, keys: np.ndarray, values: np.ndarray) -> int:
        """The measurement's release on the map, an ``AnyObject`` the caller frees. OpenDP builds the map from two
        vectors it copied (``slice_as_object``); all three are freed here."""
        made: list[int] = []
        try:
            made.append(_vector_object(keys))
            made.append(_vector_object(values))
            pointers = (ctypes.c_void_p * 2)(*made)
            data = _lib.FfiSlice(ctypes.cast(pointers, ctypes.c_void_p), 2)
            made.append(_ok(self._lib.opendp_data__slice_as_object(ctypes.byref(data), _MAP_I64)))
            return _ok(self._lib.opendp_core__measurement_invoke(self._pointer, made[-1]))
        finally:
            for pointer in made:
                _ok(self._lib.opendp_data__object_free(pointer))


def _check_vector(row: np.ndarray) -> None:
    if row.dtype != np.int64 or row.ndim != 1 or not row.flags.c_contiguous:
        raise TypeError("expected a contiguous one-dimensional int64 array")


def _vector_object(row: np.ndarray) -> int:
    """A ``Vec<i64>`` ``AnyObject`` holding a copy of ``row``, which the caller frees."""
    data = _lib.FfiSlice(row.ctypes.data, len(row))
    return _ok(_library().opendp_data__slice_as_object(ctypes.byref(data), _VEC_I64))


def _vector_copy(vector: int) -> np.ndarray:
    """A numpy copy of a ``Vec<i64>`` ``AnyObject`` (checked to be one)."""
    lib = _library()
    name = _type_name(vector)
    if name != _VEC_I64:  # pragma: no cover - a map of i64 to i64 is released as two Vec<i64>
        raise TypeError(f"expected Vec<i64>, got {name!r}")
    raw = _ok(lib.opendp_data__object_as_slice(vector))
    try:
        data = ctypes.cast(raw, _slice_p).contents
        if not data.len:
            return np.zeros(0, dtype=np.int64)
        return np.ctypeslib.as_array(ctypes.cast(data.ptr, ctypes.POINTER(ctypes.c_int64)), (data.len,)).copy()
    finally:
        _ok(lib.opendp_data__slice_free(raw))


def _type_name(released: int) -> bytes | None:
    """The Rust type of an ``AnyObject``, as OpenDP spells it."""
    lib = _library()
    kind = _ok(lib.opendp_data__object_type(released))
    try:
        return ctypes.cast(kind, ctypes.c_char_p).value
    finally:
        _ok(lib.opendp_data__str_free(kind))


def _ok(result: Any) -> int:
    """The pointer a call returned, or OpenDP's exception (its error freed by the bindings' ``unwrap``)."""
    if result.tag == 0:
        return int(result.payload.Ok or 0)
    _lib.unwrap(result, ctypes.c_void_p)  # raises OpenDPException and frees the error
    raise OpenDPException("Failed", "OpenDP returned an error without raising it")  # pragma: no cover
