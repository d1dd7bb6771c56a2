"""Worker for the export's logits check: MaxText's own logits for a batch of token ids.

Run in a child process (it imports JAX and MaxText)::

    python -m nanogerman.maxtext_logits <ids.npy> <logits.npy> <model.yml> key=value ...

It builds the model from the MaxText config given by the remaining arguments (the
training run's settings with ``load_parameters_path`` pointing at the checkpoint),
loads the checkpoint with MaxText's ``from_pretrained`` (Flax NNX) and runs the same
forward pass as training (``loss_fn`` in ``maxtext.trainers.pre_train.train``): one
segment per row, positions 0…L-1, no dropout. The logits are saved as float32.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: python -m nanogerman.maxtext_logits <ids.npy> <logits.npy> <model.yml> key=value ...\n")
        return 2
    ids_path, out_path, maxtext_argv = argv[0], argv[1], argv[2:]

    import jax.numpy as jnp
    import numpy as np
    from maxtext.configs import pyconfig
    from maxtext.utils import model_creation_utils

    ids = np.load(ids_path).astype(np.int32)
    config = pyconfig.initialize(["", *maxtext_argv])
    model, mesh = model_creation_utils.from_pretrained(config)
    positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), ids.shape)
    segments = np.ones_like(ids)
    with mesh:
        logits = model(
            decoder_input_tokens=jnp.asarray(ids),
            decoder_positions=jnp.asarray(positions),
            decoder_segment_ids=jnp.asarray(segments),
            enable_dropout=False,
        )
    if isinstance(logits, tuple):  # some decoder blocks also return auxiliary outputs
        logits = logits[0]
    np.save(out_path, np.asarray(logits, dtype=np.float32))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
