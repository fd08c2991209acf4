"""Runs the original qlty's own tests against qlty_cpp: `qlty` and its submodules are aliased to qlty_cpp's before
any test imports them (copied over the original's conftest.py by run_qlty_suite.py).

A name the tests import that qlty_cpp does not have (the original's internals: numba kernels, private samplers,
metadata helpers) imports as a function that raises NotImplementedError when called, so the tests that use it fail
one by one (and run_qlty_suite.py lists them as testing the original's internals) instead of their whole file
failing to import.
"""

import sys
import types

import qlty_cpp

SUBMODULES = ("qlty2D", "qlty3D", "qlty2DLarge", "qlty3DLarge", "patch_pairs_2d", "patch_pairs_3d", "cleanup")


def _internal(module: str, name: str):
    def missing(*args, **kwargs):
        raise NotImplementedError(f"{module}.{name} is an internal of the original qlty, not part of qlty_cpp")

    missing.__name__ = name
    return missing


def _alias(module: types.ModuleType, name: str) -> types.ModuleType:
    alias = types.ModuleType(name, module.__doc__)
    alias.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})

    def missing(attr: str):  # PEP 562: only for names the module lacks
        if attr.startswith("__"):  # the import system's questions (__path__, __spec__, ...)
            raise AttributeError(attr)
        return _internal(name, attr)

    alias.__getattr__ = missing
    return alias


sys.modules["qlty"] = _alias(qlty_cpp, "qlty")
sys.modules["qlty"].__path__ = []  # a package, so that `import qlty.x` looks in sys.modules
for sub in SUBMODULES:
    sys.modules[f"qlty.{sub}"] = _alias(getattr(qlty_cpp, sub), f"qlty.{sub}")
    setattr(sys.modules["qlty"], sub, sys.modules[f"qlty.{sub}"])
# qlty.base: the original's argument rules (normalize_border, validate_border_weight) are qlty_cpp's too
sys.modules["qlty.base"] = _alias(qlty_cpp._common, "qlty.base")
