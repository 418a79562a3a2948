"""``python -m bench.moto_filled PORT BUCKET COUNT SEED``: moto_server with a bucket already holding COUNT objects.

moto_server takes 150-300 PUTs a second through HTTP: 100,000 objects take 6 to 11 minutes on
the benchmark machine. Written into moto's in-memory backend before the server starts, in the
same process, they take seconds. Keys and sizes are those of :mod:`bench.scale_events`.
No notification is sent (the bucket has no notification configuration yet).
"""

from __future__ import annotations

import random
import sys
import time


def main(argv: list[str]) -> None:
    port, bucket, count, seed = int(argv[0]), argv[1], int(argv[2]), int(argv[3])
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import main as serve

    from bench.scale_events import MAX_SIZE, MIN_SIZE, object_key

    t0 = time.perf_counter()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    backend.create_bucket(bucket, "us-east-1")
    rng = random.Random(seed)
    for i in range(count):
        backend.put_object(bucket, object_key(i), rng.randbytes(rng.randint(MIN_SIZE, MAX_SIZE)))
    print(f"filled {count} objects in {time.perf_counter() - t0:.1f} s", flush=True)
    serve(["-H", "127.0.0.1", "-p", str(port)])


if __name__ == "__main__":
    main(sys.argv[1:])
