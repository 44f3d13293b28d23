"""Accuracy-aware search across methods and runtimes: the `search` job kind's core.

goal.py (what it aims at), space.py (what a trial may be, and its job steps), record.py (the state kept in the
job's result), outcomes.py (what a trial's pipeline produced), status.py (trials, front and best, as followed
live), study.py (the Optuna study), drive.py (running a trial's jobs from inside the search), runner.py (the loop),
submit.py (queueing one).
"""

from jobs.search.status import SearchStatus, TrialRow, status
from jobs.search.submit import submit_search

__all__ = ["SearchStatus", "TrialRow", "status", "submit_search"]
