"""Reporting: tables, figures, the artifact registry and the report page (the paper's numbers: evaluation.reference)."""
