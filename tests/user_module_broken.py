"""A module that fails at import time (named by a test suite as tests.user_module_broken:Anything)."""
raise ImportError("this module needs a package that is not installed")
