"""The thin Teams layer: the only package that imports botbuilder.

It decodes activities into `Actor`s and action data, calls the plain-Python dialogue and encodes
its cards back. Moving to the Microsoft 365 Agents SDK means rewriting this package only.
"""
