"""The work: job kinds, intake, runtimes, and the worker that runs jobs in child processes.

Importable without gradio, so a GPU machine can run jobs headless.
"""
