"""Build hook for tether's optional C extensions, ``tether._speedups`` and
``tether.asyncio._speedups``.

All metadata lives in pyproject.toml; this file only adds the extension.  The
extension is optional: when it cannot be built (no compiler, missing Python
headers, ...) the install still succeeds with a warning and tether runs on its
pure-Python code paths.

Environment variables:

``TETHER_NO_EXTENSIONS=1``
    Do not even try to build the extension.
``TETHER_REQUIRE_EXTENSIONS=1``
    Make a failed build an error instead of a warning (for wheel builders and
    CI, so that a broken toolchain cannot silently ship a pure-Python wheel).

No ``-march=native``: wheels must run on any CPU of their platform.  SSE2 is
part of the x86-64 baseline; the AVX2 kernel is compiled with a target
attribute and chosen at import time when the CPU supports it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import (
    CCompilerError,
    CompileError,
    ExecError,
    LinkError,
    PlatformError,
)

BUILD_ERRORS = (CCompilerError, CompileError, LinkError, ExecError, PlatformError, OSError)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _warn(message: str) -> None:
    bar = "*" * 75
    print(f"\n{bar}\n{message}\n{bar}\n", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """``build_ext`` that turns a failed build into a warning."""

    def run(self) -> None:
        try:
            super().run()
        except BUILD_ERRORS as exc:
            self._failed(exc)

    def build_extensions(self) -> None:
        compiler_type = getattr(self.compiler, "compiler_type", "")
        for ext in self.extensions:
            if compiler_type == "msvc":
                ext.extra_compile_args = ["/O2", *ext.extra_compile_args]
            else:
                ext.extra_compile_args = ["-O3", *ext.extra_compile_args]
        super().build_extensions()

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            self._failed(exc, ext.name)

    def _failed(self, exc: BaseException, name: str = "tether._speedups") -> None:
        if _env_flag("TETHER_REQUIRE_EXTENSIONS"):
            raise exc
        _warn(
            f"WARNING: the optional C extension {name} could not be built:\n"
            f"    {type(exc).__name__}: {exc}\n"
            "tether is installed without it and uses its pure-Python fallback,\n"
            "which is correct but slower (WebSocket masking, UTF-8 validation).\n"
            "To get the speedups, install a C compiler and the Python headers,\n"
            "then reinstall without pip's wheel cache, which may hold this build:\n"
            "    pip install --force-reinstall --no-cache-dir tether"
        )


ext_modules = []
if not _env_flag("TETHER_NO_EXTENSIONS"):
    # Native code lives in the layer it serves: the core's hot path
    # (masking, UTF-8, framing) and the asyncio layer's read path (Receiver).
    # Both include the shared masking kernels.
    for name, source in (
        ("tether._speedups", "src/tether/_speedups.c"),
        ("tether.asyncio._speedups", "src/tether/asyncio/_speedups.c"),
    ):
        ext_modules.append(
            Extension(
                name,
                sources=[source],
                depends=["src/tether/_mask_kernels.h"],
                # Lets a failure through to setuptools' own handling as a warning
                # too; but it must not swallow the error when it is required.
                optional=not _env_flag("TETHER_REQUIRE_EXTENSIONS"),
            )
        )

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
    # The C source goes into the sdist (as an extension source), not wheels.
    exclude_package_data={"tether": ["*.c", "*.h"], "tether.asyncio": ["*.c"]},
)
