"""Hospital interoperability: DICOMweb in (QIDO/WADO), DICOM SR and FHIR out, STOW-RS back.

``dicomweb`` talks to a PACS (dicomweb-client); ``sr`` writes a TID 1500 Comprehensive 3D SR
with highdicom; ``fhir`` writes an R4B DiagnosticReport with fhir.resources; ``codes`` maps the
finding vocabulary to SNOMED CT (pydicom's ``codes.SCT``) or the documented local scheme.
"""
