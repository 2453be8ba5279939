"""Everything DICOM: receive, assemble, write results, send, simulated scanner."""
