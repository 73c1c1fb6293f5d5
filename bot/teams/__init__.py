"""The Teams channel layer: the only package that imports the Microsoft 365 Agents SDK.

It decodes activities into `Actor`s and action data, calls the plain-Python router and encodes its
cards back; it checks Bot Framework tokens, and sends the message outbox's cards and texts
through the connector. `build_teams_channel` (in `channel`) is its one entry for the app.

Owns: every Agents SDK type. May import: config, router, oversight, ocmw, referral, delivery, evidence, secrets, core,
storage.
"""
