"""A safe codec for the objects stored in model bundles: JSON for the structure, raw arrays for data.

:func:`encode` turns an object into ``(meta, arrays)``: ``meta`` is JSON-able (``json.dumps`` with
``allow_nan=False`` works on it) and ``arrays`` maps a key (``"a0"``, ``"a1"``, ...) to a numpy
array that holds no Python objects. :func:`decode` turns them back. Nothing in either is pickled,
and decoding cannot run code named by the data: a tampered ``meta`` or array can at worst give
wrong numbers, an error, or an object of a class on the whitelist.

Format of a ``meta`` node (version :data:`VERSION`):

- ``null``, ``true``/``false``, a JSON int, a finite JSON float, a JSON string, a JSON list (a Python
  list of nodes) stand for themselves;
- every other value is a JSON object with a tag ``"$"``: ``float`` (``"v"``: ``"nan"``, ``"inf"``,
  ``"-inf"``), ``tuple`` (``"v"``: nodes), ``dict`` (``"v"``: {str key: node}, or ``"items"``:
  [[key node, value node], ...] when a key is not a str), ``ndarray`` (``"ref"``: array key;
  ``"str"``: the array was an object array of str, stored as a fixed-width ``U`` array, with
  optional ``"none"`` / ``"nan"`` refs of bool masks of the missing values; or ``"items"``: the
  elements as nodes for any other object array, with ``"shape"``), ``npscalar`` (``"dtype"``,
  ``"v"``), ``dtype`` (``"v"``: ``dtype.str``), ``timestamp`` / ``timedelta`` (``"v"``: ns, ``"unit"``,
  ``"tz"``), ``nat``, ``index`` / ``rangeindex`` / ``series`` / ``dataframe`` (pandas; column values as
  ``column`` nodes with their dtype recorded), ``sparse`` (scipy csr/csc, ``"format"``, ``"array"``
  (csr_array vs csr_matrix), ``"shape"``, ``data``/``indices``/``indptr`` nodes) and ``object``
  (``"class"``: a name of :data:`CLASSES`, ``"state"``: node).

Invariants:

- only the classes of :data:`CLASSES` are encoded or decoded: the name maps to a module and an
  attribute fixed in this file; a module is never imported because a file names it (an unknown name
  is :class:`ArtefactError`);
- an object's state is ``__getstate__()`` when its class defines one (scikit-learn estimators do),
  else its ``__dict__``; it is rebuilt with ``cls.__new__(cls)`` then ``__setstate__(state)`` when the
  class defines one, else ``__dict__.update(state)``;
- arrays are stored with their dtype (``dtype.str``: no object, no structured dtypes), shape and
  memory order; an object array of str comes back as an object array of the same str; the same
  array object referenced twice is stored once and comes back as one array;
- decoded arrays are the arrays given to :func:`decode` (no copy): :mod:`rebuy.bundle` builds them
  as views of the verified bytes.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

VERSION = 1
"""Version of the node format (``meta["version"]`` of an artefact file)."""

CLASSES: dict[str, tuple[str, str]] = {
    # rebuy's purchase and spend models
    "rebuy.BGNBDModel": ("rebuy.models.bgnbd", "BGNBDModel"),
    "rebuy.MBGNBDModel": ("rebuy.models.mbgnbd", "MBGNBDModel"),
    "rebuy.ParetoNBDModel": ("rebuy.models.pareto_nbd", "ParetoNBDModel"),
    "rebuy.GammaGammaModel": ("rebuy.models.gamma_gamma", "GammaGammaModel"),
    "rebuy.ProbabilityCalibrator": ("rebuy.models.selection", "ProbabilityCalibrator"),
    "rebuy.CLVRanker": ("rebuy.models.ranker", "CLVRanker"),
    "rebuy.BoostedTrees": ("rebuy.models.trees", "BoostedTrees"),
    # segmentation
    "rebuy.RFMScorer": ("rebuy.segment", "RFMScorer"),
    "rebuy.RFMClusterer": ("rebuy.segment", "RFMClusterer"),
    # the recommender and its parts
    "rebuy.Recommender": ("rebuy.recommend.recommender", "Recommender"),
    "rebuy.Interactions": ("rebuy.recommend.interactions", "Interactions"),
    "rebuy.ProductInfo": ("rebuy.recommend.products", "ProductInfo"),
    "rebuy.Popularity": ("rebuy.recommend.popularity", "Popularity"),
    "rebuy.CoOccurrence": ("rebuy.recommend.cooccurrence", "CoOccurrence"),
    "rebuy.LatentFactors": ("rebuy.recommend.implicit_model", "LatentFactors"),
    "rebuy.ItemNeighbours": ("rebuy.recommend.neighbours", "ItemNeighbours"),
    # third-party classes the above hold
    "sklearn.KMeans": ("sklearn.cluster", "KMeans"),
    "sklearn.RobustScaler": ("sklearn.preprocessing", "RobustScaler"),
    "sklearn.StandardScaler": ("sklearn.preprocessing", "StandardScaler"),
    "implicit.AlternatingLeastSquares": ("implicit.cpu.als", "AlternatingLeastSquares"),
    "implicit.BayesianPersonalizedRanking": ("implicit.cpu.bpr", "BayesianPersonalizedRanking"),
    "implicit.LogisticMatrixFactorization": ("implicit.cpu.lmf", "LogisticMatrixFactorization"),
}
"""The whitelist: stable name -> (module, attribute). Only these classes are stored or rebuilt."""

_ARRAY_KINDS = frozenset("biufcUSMm")
"""dtype kinds stored as raw arrays (bool, ints, floats, complex, str/bytes, datetime/timedelta)."""

_MAX_DEPTH = 200


class ArtefactError(Exception):
    """An object that cannot be encoded, or a ``meta`` / array set that does not decode (one line)."""


# --------------------------------------------------------------------------------------------- classes


def _resolve(name: str) -> type:
    try:
        module, attr = CLASSES[name]
    except (KeyError, TypeError):
        raise ArtefactError(f"unknown class {str(name)[:80]!r} (not one rebuy stores in bundles)") from None
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _class_name(cls: type) -> str | None:
    """The registered name of ``cls`` (looking only at modules already imported), or None."""
    for name, (module, attr) in CLASSES.items():
        mod = sys.modules.get(module)
        if mod is not None and getattr(mod, attr, None) is cls:
            return name
    return None


def class_names(meta: Any) -> set[str]:
    """Every class name a ``meta`` node refers to (to check a file without decoding it)."""
    out: set[str] = set()
    stack = [meta]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("$") == "object":
                out.add(str(node.get("class")))
            stack.extend(v for k, v in node.items() if k != "$")
    return out


def check_classes(meta: Any) -> None:
    """ArtefactError when ``meta`` names a class outside :data:`CLASSES` (nothing is imported)."""
    unknown = sorted(class_names(meta) - set(CLASSES))
    if unknown:
        raise ArtefactError(f"unknown class {unknown[0][:80]!r} (not one rebuy stores in bundles)")


# --------------------------------------------------------------------------------------------- encoding


class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._memo: dict[int, tuple[str, Any]] = {}  # id(array) -> (key, array kept alive)
        self._depth = 0

    def array_ref(self, arr: np.ndarray) -> str:
        hit = self._memo.get(id(arr))
        if hit is not None and hit[1] is arr:
            return hit[0]
        key = f"a{len(self.arrays)}"
        self.arrays[key] = arr
        self._memo[id(arr)] = (key, arr)
        return key

    def node(self, obj: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise ArtefactError("object nested too deeply (a reference cycle?)")
            return self._node(obj)
        finally:
            self._depth -= 1

    def _node(self, obj: Any) -> Any:
        if obj is None or type(obj) in (bool, str, int):
            return obj
        if type(obj) is float:
            return obj if math.isfinite(obj) else {"$": "float", "v": repr(obj)}
        if type(obj) is list:
            return [self.node(x) for x in obj]
        if type(obj) is tuple:
            return {"$": "tuple", "v": [self.node(x) for x in obj]}
        if type(obj) is dict:
            if all(type(k) is str for k in obj):
                return {"$": "dict", "v": {k: self.node(v) for k, v in obj.items()}}
            return {"$": "dict", "items": [[self.node(k), self.node(v)] for k, v in obj.items()]}
        if type(obj) is np.ndarray:
            return self.ndarray(obj)
        if isinstance(obj, np.generic):
            return self.npscalar(obj)
        if isinstance(obj, np.dtype):
            return {"$": "dtype", "v": _plain_dtype(obj).str}
        mod = type(obj).__module__.split(".")[0]
        if mod == "pandas":
            return self.pandas(obj)
        if mod == "scipy":
            return self.sparse(obj)
        return self.instance(obj)

    def ndarray(self, arr: np.ndarray) -> Any:
        if arr.dtype.kind == "O":
            return self.object_array(arr)
        _plain_dtype(arr.dtype)
        return {"$": "ndarray", "ref": self.array_ref(arr)}

    def object_array(self, arr: np.ndarray) -> Any:
        flat = arr.ravel()  # C order, as reshape restores it
        none = np.fromiter((x is None for x in flat), dtype=bool, count=flat.size)
        nan = np.fromiter((type(x) is float and x != x for x in flat), dtype=bool, count=flat.size)
        strs = np.fromiter((type(x) is str for x in flat), dtype=bool, count=flat.size)
        if (strs | none | nan).all() and strs.any() or (flat.size == 0):
            filled = flat.copy()
            filled[none | nan] = ""
            u = filled.astype(str) if flat.size else np.zeros(0, dtype="U1")
            back = u.astype(object)
            back[none] = None
            back[nan] = float("nan")
            if all(a is b or a == b or (a != a and b != b) for a, b in zip(back.tolist(), flat.tolist(), strict=True)):
                out: dict[str, Any] = {"$": "ndarray", "str": self.array_ref(u.reshape(arr.shape))}
                if none.any():
                    out["none"] = self.array_ref(none.reshape(arr.shape))
                if nan.any():
                    out["nan"] = self.array_ref(nan.reshape(arr.shape))
                return out
        return {"$": "ndarray", "items": [self.node(x) for x in arr.ravel().tolist()], "shape": list(arr.shape)}

    def npscalar(self, obj: np.generic) -> Any:
        dtype = _plain_dtype(obj.dtype)
        if dtype.kind in "mM":
            return {"$": "npscalar", "dtype": dtype.str, "v": int(obj.view("i8"))}
        if dtype.kind in "US":
            return {"$": "npscalar", "dtype": dtype.str, "v": self.node(obj.item() if dtype.kind == "U" else
                                                                      obj.item().decode("latin-1"))}
        if dtype.kind == "c":
            return {"$": "npscalar", "dtype": dtype.str, "v": [self.node(float(obj.real)), self.node(float(obj.imag))]}
        return {"$": "npscalar", "dtype": dtype.str, "v": self.node(obj.item())}

    def pandas(self, obj: Any) -> Any:
        import pandas as pd

        if obj is pd.NaT:
            return {"$": "nat"}
        if isinstance(obj, pd.Timestamp):
            return {"$": "timestamp", "v": int(obj.value), "unit": obj.unit, "tz": None if obj.tz is None else str(obj.tz)}
        if isinstance(obj, pd.Timedelta):
            return {"$": "timedelta", "v": int(obj.value), "unit": obj.unit}
        if type(obj) is pd.RangeIndex:
            return {"$": "rangeindex", "start": obj.start, "stop": obj.stop, "step": obj.step,
                    "name": self.node(obj.name)}
        if isinstance(obj, pd.Index) and not isinstance(obj, pd.MultiIndex):
            return {"$": "index", "values": self.column(obj), "name": self.node(obj.name)}
        if type(obj) is pd.Series:
            return {"$": "series", "values": self.column(obj), "index": self.node(obj.index),
                    "name": self.node(obj.name), "attrs": self.node(dict(obj.attrs))}
        if type(obj) is pd.DataFrame:
            if obj.columns.has_duplicates:
                raise ArtefactError("cannot store a DataFrame with duplicate column names")
            return {"$": "dataframe", "columns": self.node(obj.columns),
                    "data": [self.column(obj.iloc[:, i]) for i in range(obj.shape[1])],
                    "index": self.node(obj.index), "attrs": self.node(dict(obj.attrs))}
        raise ArtefactError(f"cannot store a {type(obj).__module__}.{type(obj).__qualname__} in a bundle")

    def column(self, values: Any) -> Any:
        """The values of a Series / Index with their dtype (numpy, string, categorical, tz-aware)."""
        import pandas as pd

        dtype = values.dtype
        if isinstance(dtype, np.dtype):
            return {"$": "column", "kind": "numpy", "values": self.ndarray(np.asarray(values)), "dtype": dtype.str}
        if isinstance(dtype, pd.StringDtype):
            obj = np.array(values.astype(object), dtype=object)
            obj[np.asarray(pd.isna(values), dtype=bool)] = None
            return {"$": "column", "kind": "string", "storage": dtype.storage,
                    "na": "NA" if dtype.na_value is pd.NA else "nan", "values": self.ndarray(obj)}
        if isinstance(dtype, pd.CategoricalDtype):
            cat = pd.Categorical(values)
            return {"$": "column", "kind": "category", "ordered": bool(dtype.ordered),
                    "categories": self.node(dtype.categories), "codes": self.ndarray(np.asarray(cat.codes))}
        if isinstance(dtype, pd.DatetimeTZDtype):
            return {"$": "column", "kind": "datetimetz", "tz": str(dtype.tz), "unit": dtype.unit,
                    "values": self.ndarray(np.asarray(values.tz_convert(None) if isinstance(values, pd.Index)
                                                      else values.dt.tz_convert(None)))}
        raise ArtefactError(f"cannot store pandas values of dtype {dtype} in a bundle")

    def sparse(self, obj: Any) -> Any:
        import scipy.sparse as sp

        kinds = {sp.csr_matrix: ("csr", False), sp.csc_matrix: ("csc", False),
                 sp.csr_array: ("csr", True), sp.csc_array: ("csc", True)}
        kind = kinds.get(type(obj))
        if kind is None:
            raise ArtefactError(f"cannot store a {type(obj).__module__}.{type(obj).__qualname__} in a bundle")
        return {"$": "sparse", "format": kind[0], "array": kind[1], "shape": list(map(int, obj.shape)),
                "data": self.ndarray(obj.data), "indices": self.ndarray(obj.indices),
                "indptr": self.ndarray(obj.indptr), "sorted": bool(obj.has_sorted_indices)}

    def instance(self, obj: Any) -> Any:
        cls = type(obj)
        name = _class_name(cls)
        if name is None:
            raise ArtefactError(f"cannot store a {cls.__module__}.{cls.__qualname__} in a bundle: not in "
                                "rebuy.artefacts.CLASSES")
        if getattr(cls, "__getstate__", object.__getstate__) is not object.__getstate__:
            state = obj.__getstate__()
        else:
            state = dict(obj.__dict__)
        return {"$": "object", "class": name, "state": self.node(state)}


def _plain_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise ArtefactError(f"arrays of dtype {dtype} cannot be in a bundle")
    return dtype


def encode(obj: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of ``obj``: ``meta`` = {"version", "class", "object": node}. ArtefactError
    (one line naming the type) for anything the format cannot hold."""
    enc = _Encoder()
    node = enc.node(obj)
    top = node.get("class") if isinstance(node, dict) and node.get("$") == "object" else type(obj).__name__
    return {"version": VERSION, "class": top, "object": node}, enc.arrays


# --------------------------------------------------------------------------------------------- decoding


class _Decoder:
    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = arrays
        self._depth = 0

    def array(self, key: Any) -> np.ndarray:
        if not isinstance(key, str) or key not in self.arrays:
            raise ArtefactError(f"reference to a missing array {str(key)[:40]!r}")
        arr = self.arrays[key]
        if not isinstance(arr, np.ndarray) or arr.dtype.hasobject:
            raise ArtefactError(f"array {key!r} is not a plain array")
        return arr

    def node(self, node: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise ArtefactError("meta nested too deeply")
            return self._node(node)
        finally:
            self._depth -= 1

    def _node(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.node(x) for x in node]
        if not isinstance(node, dict):
            raise ArtefactError(f"malformed node of type {type(node).__name__}")
        tag = node.get("$")
        handler = _HANDLERS.get(tag) if isinstance(tag, str) else None
        if handler is None:
            raise ArtefactError(f"unknown node tag {str(tag)[:40]!r}")
        return handler(self, node)

    def d_float(self, node: dict) -> float:
        v = node["v"]
        if v not in ("nan", "inf", "-inf"):
            raise ArtefactError(f"malformed float {str(v)[:20]!r}")
        return float(v)

    def d_tuple(self, node: dict) -> tuple:
        return tuple(self.node(x) for x in _list(node["v"]))

    def d_dict(self, node: dict) -> dict:
        if "v" in node:
            v = node["v"]
            if not isinstance(v, dict):
                raise ArtefactError("malformed dict node")
            return {k: self.node(x) for k, x in v.items()}
        return {self.node(k): self.node(x) for k, x in (_pair(p) for p in _list(node["items"]))}

    def d_ndarray(self, node: dict) -> np.ndarray:
        if "ref" in node:
            return self.array(node["ref"])
        if "str" in node:
            u = self.array(node["str"])
            if u.dtype.kind != "U":
                raise ArtefactError("malformed str array (not a unicode array)")
            out = u.astype(object)
            for mask, value in (("none", None), ("nan", float("nan"))):
                if mask in node:
                    m = self.array(node[mask])
                    if m.dtype != np.bool_ or m.shape != out.shape:
                        raise ArtefactError(f"malformed {mask} mask of a str array")
                    out[m] = value
            return out
        items = [self.node(x) for x in _list(node["items"])]
        shape = tuple(int(s) for s in _list(node["shape"]))
        out = np.empty(len(items), dtype=object)
        for i, x in enumerate(items):
            out[i] = x
        if math.prod(shape) != len(items):
            raise ArtefactError("malformed object array (shape does not match its items)")
        return out.reshape(shape)

    def d_npscalar(self, node: dict) -> np.generic:
        dtype = _plain_dtype(_dtype(node["dtype"]))
        v = node["v"]
        if dtype.kind in "mM":
            return np.array(int(v), dtype="i8").view(dtype)[()]
        if dtype.kind == "c":
            re, im = (self.node(x) for x in _list(v))
            return np.array(complex(re, im), dtype=dtype)[()]
        value = self.node(v)
        if dtype.kind == "S":
            value = str(value).encode("latin-1")
        return np.array(value, dtype=dtype)[()]

    def d_dtype(self, node: dict) -> np.dtype:
        return _plain_dtype(_dtype(node["v"]))

    def d_nat(self, node: dict) -> Any:
        import pandas as pd

        return pd.NaT

    def d_timestamp(self, node: dict) -> Any:
        import pandas as pd

        ts = pd.Timestamp(int(node["v"]), unit="ns", tz="UTC" if node.get("tz") else None)
        if node.get("tz"):
            ts = ts.tz_convert(str(node["tz"]))
        return ts.as_unit(str(node.get("unit", "ns")))

    def d_timedelta(self, node: dict) -> Any:
        import pandas as pd

        return pd.Timedelta(int(node["v"]), unit="ns").as_unit(str(node.get("unit", "ns")))

    def d_rangeindex(self, node: dict) -> Any:
        import pandas as pd

        return pd.RangeIndex(int(node["start"]), int(node["stop"]), int(node["step"]), name=self.node(node["name"]))

    def d_index(self, node: dict) -> Any:
        import pandas as pd

        values = self.column(node["values"])
        return pd.Index(values, dtype=getattr(values, "dtype", None), name=self.node(node["name"]), copy=False)

    def d_series(self, node: dict) -> Any:
        import pandas as pd

        values = self.column(node["values"])
        s = pd.Series(values, index=self.node(node["index"]), name=self.node(node["name"]),
                      dtype=getattr(values, "dtype", None), copy=False)
        s.attrs.update(self.node(node.get("attrs")) or {})
        return s

    def d_dataframe(self, node: dict) -> Any:
        import pandas as pd

        columns = self.node(node["columns"])
        data = [self.column(c) for c in _list(node["data"])]
        if len(data) != len(columns):
            raise ArtefactError("malformed DataFrame node (columns and data differ in length)")
        index = self.node(node["index"])
        n = len(index)
        frame = pd.DataFrame({i: pd.Series(v, dtype=getattr(v, "dtype", None), copy=False) for i, v in enumerate(data)},
                             index=pd.RangeIndex(n), copy=False)
        frame.index = index
        frame.columns = columns
        frame.attrs.update(self.node(node.get("attrs")) or {})
        return frame

    def column(self, node: Any) -> Any:
        import pandas as pd

        if not isinstance(node, dict) or node.get("$") != "column":
            raise ArtefactError("malformed column node")
        kind = node.get("kind")
        if kind == "numpy":
            values = self.node(node["values"])
            if not isinstance(values, np.ndarray) or values.dtype != _dtype(node.get("dtype", values.dtype.str)):
                raise ArtefactError("malformed numpy column (values do not have the recorded dtype)")
            return values
        if kind == "string":
            na = np.nan if node.get("na") == "nan" else pd.NA
            dtype = pd.StringDtype(storage=str(node["storage"]), na_value=na)
            values = self.node(node["values"])
            return pd.array(values, dtype=dtype)
        if kind == "category":
            codes = self.node(node["codes"])
            return pd.Categorical.from_codes(codes, categories=self.node(node["categories"]),
                                             ordered=bool(node["ordered"]))
        if kind == "datetimetz":
            values = self.node(node["values"])
            return pd.DatetimeIndex(values).tz_localize("UTC").tz_convert(str(node["tz"])).as_unit(str(node["unit"]))
        raise ArtefactError(f"unknown column kind {str(kind)[:40]!r}")

    def d_column(self, node: dict) -> Any:
        return self.column(node)

    def d_sparse(self, node: dict) -> Any:
        import scipy.sparse as sp

        kinds = {("csr", False): sp.csr_matrix, ("csc", False): sp.csc_matrix,
                 ("csr", True): sp.csr_array, ("csc", True): sp.csc_array}
        cls = kinds.get((node.get("format"), node.get("array")))
        if cls is None:
            raise ArtefactError(f"unknown sparse format {str(node.get('format'))[:20]!r}")
        shape = tuple(int(s) for s in _list(node["shape"]))
        parts = tuple(self.node(node[k]) for k in ("data", "indices", "indptr"))
        if not all(isinstance(p, np.ndarray) for p in parts):
            raise ArtefactError("malformed sparse node")
        m = cls(parts, shape=shape, copy=False)
        if node.get("sorted"):
            m.has_sorted_indices = True
        return m

    def d_object(self, node: dict) -> Any:
        cls = _resolve(node.get("class"))
        state = self.node(node["state"])
        obj = cls.__new__(cls)
        if hasattr(cls, "__setstate__"):
            obj.__setstate__(state)
        elif isinstance(state, dict):
            obj.__dict__.update(state)
        else:
            raise ArtefactError(f"malformed state of {node.get('class')} (not a mapping)")
        return obj


def _list(v: Any) -> list:
    if not isinstance(v, list):
        raise ArtefactError("malformed node (expected a list)")
    return v


def _pair(v: Any) -> tuple[Any, Any]:
    if not isinstance(v, list) or len(v) != 2:
        raise ArtefactError("malformed dict item (expected [key, value])")
    return v[0], v[1]


def _dtype(s: Any) -> np.dtype:
    if not isinstance(s, str) or len(s) > 32:
        raise ArtefactError(f"malformed dtype {str(s)[:40]!r}")
    try:
        return np.dtype(s)
    except TypeError:
        raise ArtefactError(f"malformed dtype {s!r}") from None


def array_dtype(s: Any) -> np.dtype:
    """The dtype named by ``s`` (a ``dtype.str``) when arrays of it may be stored; ArtefactError otherwise."""
    return _plain_dtype(_dtype(s))


_HANDLERS: dict[str, Callable[[_Decoder, dict], Any]] = {
    name[2:]: fn for name, fn in vars(_Decoder).items() if name.startswith("d_")
}


def decode(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    """The object :func:`encode` gave ``(meta, arrays)`` for. ArtefactError (one line) for a
    ``meta`` of another version, an unknown class, a malformed node or a missing array."""
    if not isinstance(meta, Mapping) or meta.get("version") != VERSION:
        version = meta.get("version") if isinstance(meta, Mapping) else None
        raise ArtefactError(f"artefact format version {str(version)[:20]!r}, this rebuy reads {VERSION}")
    check_classes(meta.get("object"))
    try:
        return _Decoder(arrays).node(meta.get("object"))
    except ArtefactError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ArtefactError(f"malformed artefact ({type(exc).__name__}: {str(exc)[:120]})") from None
