"""The memory of the workbench: settings, SQLAlchemy models, entities, migrations and the artifact store.

`storage` imports neither `jobs` nor `workbench`: data flows UI -> core -> storage, never back up.
"""
