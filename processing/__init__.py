"""Pure array science for WB-DWI: phantom, ADC, computed b, segmentation, statistics.

Never imports pydicom; runs on NumPy or CuPy through :mod:`processing.backend`.
"""
