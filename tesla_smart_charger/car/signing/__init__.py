"""Signed car commands without tesla-http-proxy: Tesla's vehicle-command protocol over Fleet.

`protobuf` and `messages` encode the few messages involved, `crypto` holds the primitives,
`session` the pure session rules, `cache` the on-disk session cache and `client` the shell
that talks to `POST /api/1/vehicles/{vin}/signed_command`.
"""
