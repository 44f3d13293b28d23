"""Bringing models and datasets in: checked, hashed and stored whole, or refused with nothing left behind."""
