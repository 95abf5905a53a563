"""Write random-pixel CIFAR-10 python batches (the real on-disk format, balanced labels)
for timing runs on machines without the dataset; the attack finds nothing in them.

    python -m benchmarks.write_fake_cifar /tmp/fake   # then DATASET.ROOT /tmp/fake
"""

import os
import pickle
import sys

import numpy as np


def write_fake_cifar(root, seed=0):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = rng.permutation(np.repeat(np.arange(10), 1000)).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
                 b"filenames": [f"{i}.png".encode() for i in range(10000)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root


if __name__ == "__main__":
    print(write_fake_cifar(sys.argv[1] if len(sys.argv) > 1 else "fake_data"))
