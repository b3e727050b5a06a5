"""Write a dataset straight to S3 and stream it back through a bounded local cache (README: "Stream from
cloud storage"). Any fsspec URL works the same way; ``storage_options`` go to that dataset's filesystem.

    python examples/stream_from_s3.py s3://my-bucket/prefix --endpoint-url http://127.0.0.1:9000

Credentials come from the usual AWS environment variables (or pass key/secret in storage_options).
"""

import argparse
import tempfile

import numpy as np

from lit_streaming import StreamingDataLoader, StreamingDataset
from lit_streaming_writer import optimize


def make_sample(index):
    return {"index": index, "features": np.full(256, index % 97, np.float32)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--endpoint-url", default=None)
    args = parser.parse_args()
    storage_options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}

    optimize(
        make_sample,
        inputs=list(range(2000)),
        output_dir=args.url,
        chunk_bytes="64KB",
        num_workers=2,
        mode="overwrite",
        storage_options=storage_options,
    )

    with tempfile.TemporaryDirectory() as cache_dir:
        dataset = StreamingDataset(
            args.url,
            storage_options=storage_options,
            cache_dir=cache_dir,
            max_cache_size="2MB",  # the dataset is ~2 MB: chunks are evicted as the epoch goes
            shuffle=True,
        )
        print(f"{len(dataset)} samples; sample 1234 index = {dataset[1234]['index']}")  # fetches one chunk
        seen = []
        for batch in StreamingDataLoader(dataset, batch_size=64, num_workers=2):
            seen.extend(batch["index"].tolist())
    assert sorted(seen) == list(range(2000)), "every sample exactly once"
    print(f"streamed {len(seen)} samples from {args.url}")
