"""Python binding of the kernels/ C library (installed as edge_ladder.kernels)."""
