"""Shared test code: fixtures, harnesses for the node, Orthanc and the receiver, stand-ins."""
