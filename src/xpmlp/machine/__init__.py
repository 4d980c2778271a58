"""The machine under the backends: one BLAS library per process, CPU threads,
and files written whole (never half-written)."""
