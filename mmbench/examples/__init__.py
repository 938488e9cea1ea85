"""Example user modules: fusion classes that are not registered, named in a suite as ``package.module:ClassName``."""
