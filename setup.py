"""Build the C cores: affidavit.merkle._hashcore (hashing, see merkle/_hashcore.c),
affidavit.statements._walkcore (the schema walk's fast path, see statements/_walkcore.c),
affidavit.statements._canonicalcore (canonical JSON's fast path, statements/_canonicalcore.c),
affidavit.statements._guardcore (the secret guard's keyword search, statements/_guardcore.c),
affidavit.statements._recordcore (state records' encoding, statements/_recordcore.c) and
affidavit.server._facetcore (an action's free search facets, server/_facetcore.c).

Everything else about the distribution lives in pyproject.toml; setuptools needs this file
only to declare the extensions.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "affidavit.merkle._hashcore",
            sources=["merkle/_hashcore.c"],
            extra_compile_args=["-O3", "-std=c11"],
        ),
        Extension(
            "affidavit.statements._walkcore",
            sources=["statements/_walkcore.c"],
            depends=["statements/_wire.h"],  # read_varint, shared
            extra_compile_args=["-O2", "-std=c11"],
        ),
        Extension(
            "affidavit.statements._canonicalcore",
            sources=["statements/_canonicalcore.c"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
        Extension(
            "affidavit.statements._guardcore",
            sources=["statements/_guardcore.c"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
        Extension(
            "affidavit.statements._recordcore",
            sources=["statements/_recordcore.c"],
            extra_compile_args=["-O2", "-std=c11"],
        ),
        Extension(
            "affidavit.server._facetcore",
            sources=["server/_facetcore.c"],
            depends=["statements/_wire.h"],  # read_varint, shared
            extra_compile_args=["-O2", "-std=c11"],
        ),
    ]
)
