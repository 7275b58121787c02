"""Plain reference implementations, written from the published rules and independent of the fast kernels they
check (tests compare the two). Slow by design: loops, full-frame maps, one point at a time."""
