"""Build of the native parts; the metadata lives in pyproject.toml.

Two things need code here: the C extension (strict warnings, optional sanitizers)
and shipping ``auditwatch.pth`` at the root of site-packages, which is how every
Python started with auditwatch's environment gets audited (coverage.py's approach
to measuring subprocesses).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HOOK_DIR = Path("src/auditwatch/_hook")

CFLAGS = [
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
    "-Wno-cast-function-type",
    "-fvisibility=hidden",
]
LDFLAGS = ["-pthread"]

# AUDITWATCH_SANITIZE=address builds the extension with AddressSanitizer and
# UndefinedBehaviorSanitizer; the test suite runs that build from .ci/run.
SANITIZE = os.environ.get("AUDITWATCH_SANITIZE") == "address"
if SANITIZE:
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    CFLAGS += [*san, "-O1", "-g"]
    LDFLAGS += san


class BuildExt(build_ext):
    """Rebuild every object when sanitizing: stale objects in build/ would hide it."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if SANITIZE:
            self.force = True


class BuildPyWithPth(build_py):
    """Put auditwatch.pth next to the package so the wheel installs it in site-packages."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "auditwatch.pth"
        shutil.copyfile("src/auditwatch.pth", target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [
            *super().get_outputs(include_bytecode),
            str(Path(self.build_lib) / "auditwatch.pth"),
        ]


setup(
    ext_modules=[
        Extension(
            "auditwatch._hook",
            sources=sorted(str(p) for p in HOOK_DIR.glob("*.c")),
            depends=[str(HOOK_DIR / "aw.h")],
            extra_compile_args=CFLAGS,
            extra_link_args=LDFLAGS,
        )
    ],
    cmdclass={"build_py": BuildPyWithPth, "build_ext": BuildExt},
)
