"""Pure code: values, inputs, errors, text, ranking, summary, redaction and merge.

Nothing here imports another part of ``memory``, touches a database or does I/O.
"""
