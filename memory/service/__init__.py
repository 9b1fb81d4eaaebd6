"""The memory hub as a service: one transport-free core (``core``) under its transports."""
