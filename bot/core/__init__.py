"""What every part shares: the protocols in force, a referral's values and states, references, access lists, metrics.

Owns: the domain's vocabulary and the instruments every part records on. May import: storage.
"""
