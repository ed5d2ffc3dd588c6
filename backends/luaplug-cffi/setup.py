"""cffi needs setup.py for ``cffi_modules``; everything else is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["src/luaplug_cffi/_build.py:ffibuilder"])
