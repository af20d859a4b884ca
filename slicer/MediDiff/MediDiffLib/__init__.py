"""Slicer-free parts of the MediDiff module: command line, background process, dependencies, checks, messages,
and the task catalog read from medidiff's registry.

Nothing here imports ``slicer``, ``qt``, ``vtk`` or ``medidiff`` at import time: the module must be able to
explain that medidiff is missing before medidiff is installed, and every piece here is unit-tested with plain
pytest. The code imports on Python 3.9 (the Python of Slicer 5.4 to 5.8) so that, there, it can say which
Slicer medidiff needs.
"""
