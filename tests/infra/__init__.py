"""Tests of infra/: the Teams package, card schema and rendering, Azure templates, Dockerfile, guides."""
