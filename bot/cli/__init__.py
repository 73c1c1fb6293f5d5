"""`python -m bot ...`: serve, check, migrate, link-ocmw, protocols, register, breach-report.

Owns: the commands typed on the server. May import: anything in bot.
"""
