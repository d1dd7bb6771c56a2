"""Child process of the export: MaxText's converter, then MaxText's logits for the check, in one process.

Run as::

    python -m nanogerman.maxtext_export <ids.npy> <logits.npy> <model.yml> key=value ... --convert <model.yml> key=value ... [--flag ...]

The arguments before ``--convert`` are :mod:`nanogerman.maxtext_logits`'s; the ones after it are
``python -m maxtext.checkpoint_conversion.to_huggingface``'s (MaxText ``key=value`` settings and
its absl ``--flags``). Both steps need MaxText, JAX and TensorFlow imported (about 20 s of a CPU
core before any work); one process pays that once instead of twice.

Exit codes tell the parent which step failed: :data:`CONVERT_FAILED` or :data:`FORWARD_FAILED`
(the last line of output is the error).
"""

from __future__ import annotations

import os
import sys
import traceback

CONVERT_FAILED = 3
FORWARD_FAILED = 4


def convert(argv: list[str]) -> None:
    """What ``python -m maxtext.checkpoint_conversion.to_huggingface ARGV`` does, in this process."""
    import jax
    from maxtext.checkpoint_conversion import to_huggingface

    # the settings the converter's own ``__main__`` makes before ``app.run(main)``
    jax.config.update("jax_default_prng_impl", "unsafe_rbg")
    jax.config.update("jax_platforms", "cpu")
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    remaining = to_huggingface.FLAGS(["to_huggingface", *argv])  # absl: the --flags out, the rest for main
    to_huggingface.main(remaining)


def main(argv: list[str]) -> int:
    if "--convert" not in argv or argv.index("--convert") < 3:
        sys.stderr.write(__doc__.split("Run as::", 1)[1].split("The arguments", 1)[0])
        return 2
    split = argv.index("--convert")
    from nanogerman.maxtext_logits import main as logits_main

    try:
        convert(argv[split + 1 :])
    except Exception as error:  # noqa: BLE001  (one line for the parent; the traceback stays in the log)
        traceback.print_exc()
        print(f"{type(error).__name__}: {error}", flush=True)
        return CONVERT_FAILED
    try:
        code = logits_main(argv[:split])
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        print(f"{type(error).__name__}: {error}", flush=True)
        return FORWARD_FAILED
    return FORWARD_FAILED if code else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
