# cython: language_level=3
# Placeholder while the module is being written.
