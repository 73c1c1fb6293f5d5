"""Getting things out exactly once: the mail, its outbox and transports (SMTP, Graph), the Teams message outbox.

Owns: every outbox and its worker. May import: evidence, secrets, core, storage.
"""
