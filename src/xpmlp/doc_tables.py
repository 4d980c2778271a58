"""The documented name ``xpmlp.doc_tables``: the module :mod:`xpmlp.teach.doc_tables` itself
(the same module object, so what is set on either is set on both); ``python -m
xpmlp.doc_tables`` runs that module's command line."""

import sys

if __name__ == "__main__":
    import runpy

    runpy.run_module("xpmlp.teach.doc_tables", run_name="__main__", alter_sys=True)
else:
    from xpmlp.teach import doc_tables as _module

    sys.modules[__name__] = _module
