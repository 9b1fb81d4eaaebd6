"""Where agents already live: memory for MCP hosts and LangGraph, each behind its own extra.

- :mod:`memory.integrations.mcp_server` (extra ``mcp``): ``memctl mcp``, a drop-in for the
  reference MCP memory server (its nine graph tools, same names, schemas and results) plus
  the memory tools, over stdio or streamable HTTP.
- :mod:`memory.integrations.langgraph` (extra ``langgraph``): ``TieredStore``, a LangGraph
  ``BaseStore`` on a :class:`memory.Memory`.

Both act for one user and agent fixed by their configuration; nothing a model or a graph
passes as an argument can change whose memory they read.
"""
