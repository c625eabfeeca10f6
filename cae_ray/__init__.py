"""cae-ray."""
