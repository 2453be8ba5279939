"""The simulated scanner (phantom as a vendor would write it) for demo and tests."""
