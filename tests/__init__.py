"""The test suite: a package, so that its helpers import as ``tests.helpers.…`` (the repository root is on
``sys.path``: pyproject's ``pythonpath``). Shared fixtures are in ``conftest.py``."""
