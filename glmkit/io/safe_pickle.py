"""Reading pickles from elsewhere (the gLM release, embeddings pickled by other tools) without running their code.

A pickle names the functions and classes it needs ("globals") and the
unpickler calls them: a file can make `pickle.load` run `os.system`. Here
only the globals that rebuild plain data are admitted: numpy arrays, dtypes
and scalars, and exactly the scikit-learn estimators the gLM release holds
(PCA, LogisticRegression), which come back as a `PickledEstimator` (the class
name and the attribute dict the estimator pickled: plain data, no scikit-learn
code imported or run). Any other global is refused with one line naming the
file and the global, before anything it names is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from glmkit.errors import GlmkitError

ESTIMATORS = {  # module paths across scikit-learn versions -> the class name kept
    ("sklearn.decomposition._pca", "PCA"): "PCA",
    ("sklearn.decomposition.pca", "PCA"): "PCA",
    ("sklearn.linear_model._logistic", "LogisticRegression"): "LogisticRegression",
    ("sklearn.linear_model.logistic", "LogisticRegression"): "LogisticRegression",
}


class PickledEstimator:
    """A scikit-learn estimator as the data it pickled: ``state`` is its ``__dict__`` (``mean_``, ``coef_``…).

    One subclass per admitted estimator, whose ``name`` says which; pickle makes
    instances with ``cls.__new__`` (protocol 2+) or ``cls()`` (0, 1), then hands
    the attribute dict to ``__setstate__``."""
    name = "estimator"
    state: dict | None = None

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.name} state is not a dict")
        self.state = state

    def __repr__(self) -> str:
        return f"PickledEstimator({self.name}, {sorted(self.state or {})})"


def _estimator_class(name: str):
    return type(name, (PickledEstimator,), {"name": name})


def _reconstructor(cls, base, state):
    """copyreg._reconstructor (protocols 0 and 1) for the admitted estimator classes only."""
    if not (isinstance(cls, type) and issubclass(cls, PickledEstimator)) or base is not object or state is not None:
        raise pickle.UnpicklingError("copyreg._reconstructor of a class that is not admitted")
    return cls()


def _numpy_globals() -> dict:
    from numpy.core import multiarray

    found = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(module, "_reconstruct")] = multiarray._reconstruct
        found[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        found[(module, "_frombuffer")] = np.core.numeric._frombuffer
    found[("numpy", "ndarray")] = np.ndarray
    found[("numpy", "dtype")] = np.dtype
    return found


def _latin1_bytes(text, encoding):
    """_codecs.encode as protocol 0 uses it (bytes written as latin-1 text), and nothing else."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode other than latin1 text")
    return text.encode("latin1")


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh, where: str):
        super().__init__(fh)
        self.where = where
        import warnings

        with warnings.catch_warnings():  # numpy.core is deprecated in numpy 2 but is what old pickles name
            warnings.simplefilter("ignore", DeprecationWarning)
            self.admitted = _numpy_globals()
        self.admitted[("copyreg", "_reconstructor")] = _reconstructor
        self.admitted[("copy_reg", "_reconstructor")] = _reconstructor
        self.admitted[("_codecs", "encode")] = _latin1_bytes
        # protocol 0/1 name `object` as the base class; calling it makes an empty object, nothing more
        self.admitted[("__builtin__", "object")] = self.admitted[("builtins", "object")] = object
        for key, name in ESTIMATORS.items():
            self.admitted[key] = _estimator_class(name)
        # the dtypes numpy pickles by class (numpy >= 1.25 writes numpy.dtypes.Float64DType etc.)
        for name in dir(np.dtypes):
            if name.endswith("DType"):
                self.admitted[("numpy.dtypes", name)] = getattr(np.dtypes, name)

    def find_class(self, module, name):
        try:
            return self.admitted[(module, name)]
        except KeyError:
            raise GlmkitError(f"{self.where}: refused to load: the pickle asks for {module}.{name}, which is not "
                              f"numpy data or a scikit-learn PCA/LogisticRegression (a pickle can run code; "
                              f"only plain data is read)") from None

    def persistent_load(self, pid):
        raise GlmkitError(f"{self.where}: refused to load: the pickle uses persistent ids (not plain data)")


def load_pickle(path: str | Path):
    """The object in the pickle at ``path``, rebuilt from admitted globals only (see the module's docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise GlmkitError(f"{path}: cannot read ({e.strerror})") from None
    return loads_pickle(data, str(path))


def loads_pickle(data: bytes, where: str):
    try:
        return _Unpickler(io.BytesIO(data), where).load()
    except GlmkitError:
        raise
    except Exception as e:  # truncated or not a pickle at all
        detail = str(e).splitlines()[0] if str(e) else ""
        raise GlmkitError(f"{where}: not a readable pickle ({type(e).__name__}: {detail})") from None
