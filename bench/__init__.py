"""Side-by-side benchmark of lit-streaming against LitData, MosaicML Streaming and WebDataset.

``python -m bench.run [--small] [--jobs P1,P2,...] [--data-dir DIR]``; see ``docs/bench.md``.
"""
