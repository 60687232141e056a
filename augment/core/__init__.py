"""Helpers every layer uses: atomic files, image decoding, pixel conversion, devices, locking, plots."""
