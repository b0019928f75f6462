"""Compiled twins of measured hot loops. Each module here links to a pure-Python module
elsewhere in the tree and is compiled with the augmenting .pxd beside it."""
