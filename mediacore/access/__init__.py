"""Access rules shared by the origin and the edge: signed, expiring playback tokens
(`tokens.py`). Pure functions; time is passed in.

May import: nothing of the tree but this package.
"""
