"""Industrial QC: defect classification and localisation on product images (NEU-DET steel surfaces)."""
