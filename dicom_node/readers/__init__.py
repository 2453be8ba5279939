"""Reading DICOM objects back: this node's reports and readers' corrected SEGs."""
