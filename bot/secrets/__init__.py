"""Secrets: the ZIP passwords (Key Vault or local), the draft key and cipher, the database login token.

Owns: every secret the bot holds. May import: core, storage.
"""
