"""Deployment and tooling around the bot: Teams app package, card screenshots, Azure templates.

A package so the tests can import the scripts; the scripts also run on their own
(`python infra/teams/build_package.py`, `python -m infra.render_card_screenshots`).
"""
