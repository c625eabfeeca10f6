"""Feast integration: export training rows from a feature store; mark unselected features."""
