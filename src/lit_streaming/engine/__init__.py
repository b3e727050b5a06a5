"""The read engine's internals, below the public API modules of ``lit_streaming``: the per-process cache of open
shards (``chunks``), who is iterating (``iteration``, ``distributed``), batch assembly into reused shared-memory
slots (``batching``), trace recording (``profiling``), per-process state (``per_process``), the loader's saved
position (``resume_state``) and LitData's extra StreamingDataset arguments (``dataset_compat``).

Nothing here is imported by this ``__init__``, so ``import lit_streaming.engine.per_process`` (the writer does)
stays cheap.
"""
