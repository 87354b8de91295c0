"""CT volumes with exact geometry: the Volume type, file and DICOM reading/writing, preprocessing, resampling."""
