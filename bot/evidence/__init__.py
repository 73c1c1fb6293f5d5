"""What proves the protocol was kept: the hash-chained processing register and a breach report's content.

Owns: the register and its export formats. May import: secrets, core, storage.
"""
