"""Reporting: the paper's reference numbers, tables, figures, the artifact registry and the report page."""
