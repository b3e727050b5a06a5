"""Small, self-contained demo data and models used by `make demo`, the configs and the examples."""
