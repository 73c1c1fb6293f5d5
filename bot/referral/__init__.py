"""The referrer's side: the dialogue, drafts, article 3's data checked, who may refer, the encrypted package.

Owns: a referral until it is queued. May import: delivery, evidence, secrets, core, storage.
"""
