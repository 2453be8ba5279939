"""End-to-end runs on the phantom: scanner -> assembly -> processing -> result objects."""
