"""Built-in job kinds, one module each. Importing this package registers them."""

from jobs.kinds import inspect  # noqa: F401
