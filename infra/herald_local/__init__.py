"""A local emulator of a SAM template's WebSocket and HTTP APIs, Lambda functions and event
sources, on loopback with the real function binaries. Herald's own bindings are in herald.py.

See docs/local-stack.md for what it does and docs/runtime-contract.md for the shared names.
"""
