"""Small, self-contained demo data and models used by `make demo`, the configs and the examples.

Not part of the installed library: it lives at the top of the repository, and `lit-streaming fit` run from
the repository root finds `demo.models` (the CLI lets configs name modules of the working directory)."""
