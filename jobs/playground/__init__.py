"""Trying variants by hand: cached predictors, one text or a batch (`predict`), A/B on a text or a split (`ab`),
traffic splits with feedback (`traffic`) and prediction CSVs (`csv_export`)."""
