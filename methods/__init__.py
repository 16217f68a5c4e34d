"""Pruning methods: one file per method, registered under the name of its conf/method/<name>.yaml.

Use `methods.registry.get_method_class(name)` / `build_method(name, params)`; the registry
discovers the method modules of this package on first use (no import-time work here).
"""
