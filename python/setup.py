"""Builds the ferry-ipc wheel: the `ferry` package, its compiled _fastcall extension, and
libferry.so (stripped) inside the package, so `pip install` gives a working binding with no
PYTHONPATH and no system install.

libferry.so comes from $FERRY_LIBRARY when set, else the repository's release build
(../.build/release/libferry.so), which is built with `swift build` when missing. The version
comes from include/ferry.h (FERRY_VERSION_MAJOR/MINOR/PATCH), the one source every language
reads, so ferry.__version__ (asked of the library) and the wheel's version agree.
"""
import os
import re
import shutil
import subprocess

import numpy
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEADER = os.path.join(ROOT, "include", "ferry.h")


def version() -> str:
    text = open(HEADER).read()
    parts = [re.search(rf"#define FERRY_VERSION_{k} (\d+)", text).group(1) for k in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


def library() -> str:
    given = os.environ.get("FERRY_LIBRARY")
    if given:
        return given
    built = os.path.join(ROOT, ".build", "release", "libferry.so")
    if not os.path.exists(built):
        subprocess.run(["swift", "build", "-c", "release", "-debug-info-format", "none", "--product", "ferry"], cwd=ROOT, check=True)
    return built


class BuildWithLibrary(build_py):
    """Copies libferry.so into the built package, stripped of its debug info (68 MB → a few)."""

    def run(self):
        super().run()
        dst = os.path.join(self.build_lib, "ferry", "libferry.so")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(library(), dst)
        if shutil.which("strip"):
            subprocess.run(["strip", "--strip-unneeded", dst], check=True)
        os.chmod(dst, 0o755)


setup(
    version=version(),
    cmdclass={"build_py": BuildWithLibrary},
    ext_modules=[Extension(
        "ferry._fastcall", ["ferry/_fastcall.c"],
        include_dirs=[os.path.join(ROOT, "include"), numpy.get_include()],
        extra_compile_args=["-O3", "-Wall"],
    )],
)
