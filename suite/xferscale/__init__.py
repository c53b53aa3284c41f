from pathlib import Path as _Path

__version__ = "0.1.0"

# An installed xferscale maps the top-level kernels/, data_prep/ and configs/ folders to
# xferscale.kernels, .data_prep and .configs (pyproject's package-dir). Run from a source tree
# instead (PYTHONPATH=suite, e.g. `python -m xferscale.kernels.node` on a bare GPU node), the
# same names resolve here: the repository root joins this package's search path.
_SOURCE_ROOT = _Path(__file__).resolve().parents[2]
if (_SOURCE_ROOT / "kernels" / "__init__.py").is_file() and (_SOURCE_ROOT / "pyproject.toml").is_file():
    __path__.append(str(_SOURCE_ROOT))
