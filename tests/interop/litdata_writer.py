"""Write datasets with the real ``litdata.optimize``: ``python litdata_writer.py JOBS.json RESULT.json``.

Run in a subprocess by the interop tests, because ``litdata.optimize`` switches the calling process's
multiprocessing start method to spawn for good. Each job names a sample function of ``support.interop`` (importable
by LitData's spawned workers: the test puts tests/ on their ``PYTHONPATH``), its keyword arguments, the
number of inputs, and ``litdata.optimize``'s arguments. A job that fails records its error in
``RESULT.json`` instead of stopping the others, so one LitData failure shows up as one failing test.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import traceback


def main(jobs_path: str, result_path: str) -> None:
    import litdata
    from support import interop as cases

    with open(jobs_path) as f:
        jobs = json.load(f)
    results = {}
    for job in jobs:
        start = time.perf_counter()
        fn = functools.partial(getattr(cases, job["fn"]), **job.get("fn_kwargs", {}))
        kwargs = dict(job["optimize"])
        if job.get("tokens"):
            kwargs["item_loader"] = litdata.TokensLoader()
        try:
            litdata.optimize(
                fn=fn, inputs=list(range(job["n"])), output_dir=job["output_dir"], verbose=False, **kwargs
            )
            results[job["name"]] = {"ok": True}
        except Exception:  # noqa: BLE001 - reported to the test that needs this dataset
            results[job["name"]] = {"ok": False, "error": traceback.format_exc()}
        results[job["name"]]["seconds"] = round(time.perf_counter() - start, 2)
    with open(result_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
