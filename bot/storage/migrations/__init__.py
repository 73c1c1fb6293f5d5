"""The schema's history as Alembic revisions (`versions/`), and the bridge from databases made before them."""
