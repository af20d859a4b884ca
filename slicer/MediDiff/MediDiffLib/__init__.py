"""Slicer-free parts of the MediDiff module: command line, background process, dependencies, checks, messages.

Nothing here imports ``slicer``, ``qt``, ``vtk`` or ``medidiff``: the module must be able to explain that
medidiff is missing before medidiff is installed, and every piece here is unit-tested with plain pytest.
The code stays compatible with Python 3.9 (the Python of Slicer 5.2 to 5.8).
"""
