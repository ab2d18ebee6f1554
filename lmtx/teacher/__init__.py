"""Teachers: the LLMs that judge (document, label) pairs, local, served or in-process, behind one interface.

The package is also callable, as the Python API's ``lmtx.teacher(name, prompt=...)`` (registry.teacher_by_name).
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .registry import teacher_by_name

        return teacher_by_name(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
