"""Evaluation: judges of fluency, grammaticality, diversity and control."""
