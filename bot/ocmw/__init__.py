"""The OCMW's side: its linked channel, receipt, outcome, deletion, corrections (art. 7), reminders, status.

Owns: a referral after delivery. May import: referral, delivery, evidence, secrets, core, storage.
"""
