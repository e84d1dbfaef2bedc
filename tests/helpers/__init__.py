"""Shared test code (no tests): imported as ``helpers.<module>`` from any test folder
(pyproject's ``[tool.pytest.ini_options] pythonpath`` puts ``tests/`` on ``sys.path``)."""
