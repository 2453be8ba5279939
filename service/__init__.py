"""Composition root: settings, CLI, logging, job store, worker, exporter, HTTP."""
