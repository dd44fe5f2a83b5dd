"""saferoom: a data safe room where approved algorithms run over datasets they never see."""

__version__ = "0.1.0"  # the one version string: pyproject reads it (dynamic)
