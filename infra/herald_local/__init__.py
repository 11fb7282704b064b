"""Herald's local stack: template.yaml served on loopback with real function binaries.

See docs/local-stack.md for what it does and docs/runtime-contract.md for the shared names.
"""
