"""Duties after the fact: breach reports to both DPOs (art. 9), the DPO's register export, retention.

Owns: what runs across all referrals. May import: ocmw, referral, delivery, evidence, secrets, core, storage.
"""
