"""Workflow rows in PostgreSQL: instances and step results under HephaestusOban's locks, one job
at a time (:mod:`.instances`) or many jobs in one transaction (:mod:`.batch`, :mod:`.coalesce`)."""
