"""Build the C hashing core, affidavit.merkle._hashcore (see merkle/_hashcore.c).

Everything else about the distribution lives in pyproject.toml; setuptools needs this file
only to declare the extension.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "affidavit.merkle._hashcore",
            sources=["merkle/_hashcore.c"],
            extra_compile_args=["-O3", "-std=c11"],
        )
    ]
)
