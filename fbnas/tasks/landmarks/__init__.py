"""Facial landmarks (PFLD, 106 points): data, models, losses, metrics and the task."""
