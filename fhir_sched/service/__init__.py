"""The service layer: every door (REST, operations, HL7 v2) reads and writes through here.

``resources`` is the one write pipeline; ``authorization`` the one authorization layer;
``search``, ``bundles``, ``find``, ``booking`` and ``sweeper`` the application services built
on them; ``services`` holds one process's set, as ``compose`` builds it.
"""
