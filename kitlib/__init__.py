"""kitlib: the library behind *an executable book of reproductions* of posts from 科学空间 (kexue.fm).

Importing the package is cheap (no torch): the command line (`python -m kitlib`) starts fast.
Import the modules you need: `kitlib.run`, `kitlib.claims`, `kitlib.flooding`, ...
"""

__version__ = "0.1.0"
