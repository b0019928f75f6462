"""Build the compiled twins of the hot loops.

Each module in cython_ext/ is a link to a plain-Python module elsewhere in the tree, compiled
a second time with the augmenting .pxd beside it, so the two builds cannot drift apart.
MEDIACORE_NO_EXTENSIONS=1 at build time skips compilation (the pure twins are used).
"""

import os

from setuptools import Extension, setup

ext_modules: list[Extension] = []
if os.environ.get("MEDIACORE_NO_EXTENSIONS") != "1":
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension("cython_ext.jitter_buffer", ["cython_ext/jitter_buffer.py"]),
            Extension("cython_ext.priority_queue", ["cython_ext/priority_queue.py"]),
            Extension("cython_ext.rtp_packet", ["cython_ext/rtp_packet.py"]),
            Extension("cython_ext.h264_depacketize", ["cython_ext/h264_depacketize.py"]),
            Extension("cython_ext.ts_packets", ["cython_ext/ts_packets.py"]),
        ],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "annotation_typing": False,
        },
        quiet=True,
    )

setup(ext_modules=ext_modules)
