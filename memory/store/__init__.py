"""The only SQL of the library: tables, engine, schema, and one module per kind of row.

Every function here takes a :class:`~memory.store.db.Database` (or an engine), never a
``Memory``.
"""
