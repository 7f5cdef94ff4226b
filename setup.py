"""Build of the native parts; the metadata lives in pyproject.toml.

Three things need code here: the C extensions (strict warnings, optional sanitizers),
shipping ``auditwatch.pth`` at the root of site-packages (beside ``_auditwatch_boot``,
the module its one line imports), which is how every Python started with
auditwatch's environment gets audited (coverage.py's approach to measuring
subprocesses), and the ``auditwatch-python`` launcher: a C program
linked against the building interpreter's libpython, installed as a script into the
environment's ``bin/`` (docs/launcher.md).
"""

from __future__ import annotations

import os
import py_compile
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Distribution, Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# setuptools has no build_scripts of its own: take the one it uses (its bundled
# distutils on every Python; 3.12+ has no distutils in the standard library).
build_scripts = Distribution().get_command_class("build_scripts")

# The native recorder is the top-level extension ``_auditwatch`` (sources in
# auditwatch/_hook): an audited process imports it alone at start-up, not the package.
HOOK_DIR = Path("src/auditwatch/_hook")
# The collector's native loops. A separate extension because audited processes load
# _auditwatch and must not carry the collector's code; both compile the one SHA-256.
INGEST_DIR = Path("src/auditwatch/_ingest")
SHA256 = [str(HOOK_DIR / "sha256.c")]

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

# AUDITWATCH_SANITIZE=address builds the extensions with AddressSanitizer and
# UndefinedBehaviorSanitizer; the test suite runs that build from .ci/run.
SANITIZE = os.environ.get("AUDITWATCH_SANITIZE") == "address"
if SANITIZE:
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    CFLAGS += [*san, "-O1", "-g"]
    LDFLAGS += san


class BuildExt(build_ext):
    """Rebuild every object when sanitizing: stale objects in build/ would hide it.
    Seal with OpenSSL's SHA-256 when its headers and library link (_ingest/hash.h)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if SANITIZE:
            self.force = True

    def build_extensions(self) -> None:
        if os.environ.get("AUDITWATCH_OPENSSL", "1") != "0" and self._links_libcrypto():
            for ext in self.extensions:
                if ext.name == "auditwatch._ingest":
                    ext.define_macros.append(("AW_WITH_OPENSSL", "1"))
                    ext.libraries.append("crypto")
        else:
            self.announce("libcrypto not found: the collector seals with its own SHA-256", 3)
        super().build_extensions()

    def _links_libcrypto(self) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "probe.c"
            source.write_text(
                "#define OPENSSL_SUPPRESS_DEPRECATED 1\n#include <openssl/sha.h>\n"
                "int main(void) { SHA256_CTX c; return !SHA256_Init(&c); }\n"
            )
            try:
                objects = self.compiler.compile([str(source)], output_dir=tmp)
                self.compiler.link_executable(
                    objects, "probe", output_dir=tmp, libraries=["crypto"]
                )
            except Exception:  # any compile or link failure: build without it
                return False
        return True


# The module auditwatch.pth's line imports (pyproject.toml lists it in py-modules).
BOOT_MODULE = "_auditwatch_boot"


class BuildPyWithPth(build_py):
    """Put auditwatch.pth next to the package so the wheel installs it in site-packages,
    and ship the bytecode of the module its line imports.

    Every start-up of the environment imports ``_auditwatch_boot``; without its
    bytecode, where Python cannot write it (``pip install --no-compile`` then a
    read-only file system), each one compiles it: about 11M instructions. The wheel
    (built for one CPython version) carries it, checked against the source by hash
    (PEP 552) so that it stays valid whatever modification time pip gives the file.
    """

    def run(self) -> None:
        super().run()
        shutil.copyfile("src/auditwatch.pth", Path(self.build_lib) / "auditwatch.pth")
        py_compile.compile(
            str(Path(self.build_lib) / f"{BOOT_MODULE}.py"),
            cfile=self._boot_pyc(),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )

    def _boot_pyc(self) -> str:
        # Where the import system looks beside the source (not cache_from_source,
        # which follows PYTHONPYCACHEPREFIX of the building environment).
        name = f"{BOOT_MODULE}.{sys.implementation.cache_tag}.pyc"
        return str(Path(self.build_lib) / "__pycache__" / name)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [
            *super().get_outputs(include_bytecode),
            str(Path(self.build_lib) / "auditwatch.pth"),
            self._boot_pyc(),
        ]


LAUNCHER_SOURCE = "src/auditwatch/launcher/launcher.c"
LAUNCHER_NAME = "auditwatch-python"


def launcher_command(source: str, output: str) -> list[str]:
    """The compile-and-link command for the launcher, from the interpreter's sysconfig.

    A shared libpython (the usual case) is linked with ``-lpythonX.Y`` and an rpath to
    LIBDIR, so the launcher runs from a virtual environment; a static one is linked
    whole with the symbols exported (LINKFORSHARED), as ``python`` itself is, so that
    extension modules can resolve them.
    """
    var = sysconfig.get_config_var

    def split(name: str) -> list[str]:
        return shlex.split(var(name) or "")

    libdir = var("LIBDIR") or ""
    cc = split("CC") or ["cc"]
    cmd = [*cc, *split("CFLAGS"), *CFLAGS, f"-I{sysconfig.get_path('include')}"]
    cmd += [source, "-o", output, *split("LDFLAGS")]
    if var("Py_ENABLE_SHARED"):
        ldlibrary = var("LDLIBRARY") or f"libpython{var('VERSION')}{sys.abiflags}.so"
        name = ldlibrary[3:].split(".so")[0] if ldlibrary.startswith("lib") else ldlibrary
        cmd += [f"-L{libdir}", f"-l{name}", f"-Wl,-rpath,{libdir}"]
    else:
        static = Path(var("LIBPL") or libdir) / (var("LIBRARY") or "")
        cmd += [str(static), *split("LINKFORSHARED")]
    cmd += [*split("LIBS"), *split("SYSLIBS"), "-ldl", *LDFLAGS]
    return cmd


class BuildScripts(build_scripts):
    """Compile the launcher (a binary: the base class's shebang handling cannot copy it)."""

    def run(self) -> None:
        out_dir = Path(self.build_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        output = out_dir / LAUNCHER_NAME
        cmd = launcher_command(LAUNCHER_SOURCE, str(output))
        self.announce(" ".join(shlex.quote(c) for c in cmd), level=2)
        subprocess.run(cmd, check=True)
        output.chmod(0o755)

    def get_source_files(self) -> list[str]:
        return [LAUNCHER_SOURCE]

    def get_outputs(self) -> list[str]:
        return [str(Path(self.build_dir) / LAUNCHER_NAME)]


setup(
    # The launcher's source stands in the scripts list so that build and install run
    # build_scripts / install_scripts; BuildScripts compiles it into auditwatch-python.
    scripts=[LAUNCHER_SOURCE],
    ext_modules=[
        Extension(
            "_auditwatch",
            sources=sorted(str(p) for p in HOOK_DIR.glob("*.c")),
            depends=[str(HOOK_DIR / "aw.h"), str(HOOK_DIR / "sha256.h")],
            extra_compile_args=CFLAGS,
            extra_link_args=LDFLAGS,
        ),
        Extension(
            "auditwatch._ingest",
            sources=sorted(str(p) for p in INGEST_DIR.glob("*.c")) + SHA256,
            depends=[
                str(INGEST_DIR / "ingest.h"),
                str(INGEST_DIR / "hash.h"),
                str(HOOK_DIR / "sha256.h"),
            ],
            extra_compile_args=CFLAGS,
            extra_link_args=LDFLAGS,
        ),
    ],
    cmdclass={"build_py": BuildPyWithPth, "build_ext": BuildExt, "build_scripts": BuildScripts},
)
