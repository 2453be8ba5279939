"""The receive side: the DICOM listener, its Upper Layer, and the durable spool."""
