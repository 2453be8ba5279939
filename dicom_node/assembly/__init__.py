"""From stored instances to one exam: frames, b-values, stations, coverage."""
