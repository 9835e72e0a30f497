"""Build hook for the optional native quantization kernel; metadata lives in pyproject.toml.

``optional=True``: an install without a C compiler still succeeds and gossipml.ops.quantize
falls back to its torch path. ``-ffp-contract=off`` keeps ``a + b * c`` as two roundings so the
kernel can match torch bit-for-bit (the fused variants call fmaf explicitly); ``-fno-trapping-math``
lets the selects vectorize (no FP-exception side effects are relied on).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gossipml.ops._qnative",
            ["gossipml/ops/_qnative.c"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math"],
            libraries=["m"],
            optional=True,
        )
    ]
)
