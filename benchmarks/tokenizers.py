"""Benchmark: the tokenizer stage against the bare trainer, on the same text, in the same run.

Trains each kind (nanochat: rustbpe; neox: Hugging Face tokenizers) on shards 0-3 of
the ELTeC-deu corpus (about 55 M characters) twice over:

- bare: the library call alone on the documents already in memory (rustbpe's
  ``train_from_iterator`` + ``get_mergeable_ranks``; ``tokenizers``' ``train_from_iterator``);
- stage: ``nanogerman.tokenizer_training.train_tokenizer``, i.e. reading the parquet
  shards, training, the Hugging Face export, the id check and writing the folder.

and prints characters per second and the stage/bare time ratio (goal: at most 1.05).
Each measurement is repeated (``--repeats``) and the fastest is kept, since other work on
the machine only ever makes a run slower.

    .venv/bin/python benchmarks/tokenizers.py [--corpus ../shared/corpus/eltec-deu] [--vocab-size 65536]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is named tokenizers.py: drop its folder from the import path, or it would
# shadow the Hugging Face ``tokenizers`` package.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT / "src"))

from nanogerman.tokenizer_training import (  # noqa: E402
    NANOCHAT_SPLIT_PATTERN,
    TokenizerSpec,
    iter_texts,
    train_tokenizer,
)


def bare_nanochat(texts: list[str], spec: TokenizerSpec) -> int:
    import rustbpe

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), spec.vocab_size - len(spec.special_tokens), pattern=NANOCHAT_SPLIT_PATTERN)
    return len(trainer.get_mergeable_ranks()) + len(spec.special_tokens)


def bare_neox(texts: list[str], spec: TokenizerSpec) -> int:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer.get_vocab_size()


def timed(function, *args) -> tuple[float, object]:
    gc.collect()
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "eltec-deu")
    parser.add_argument("--shards", default="0-3", help="inclusive range of shard indices (default 0-3)")
    parser.add_argument("--vocab-size", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--kinds", default="nanochat,neox")
    args = parser.parse_args()

    first, _, last = args.shards.partition("-")
    paths = [args.corpus / f"shard_{index:05d}.parquet" for index in range(int(first), int(last or first) + 1)]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        print(f"corpus shards not found: {', '.join(missing)} (the ELTeC corpus lives in ../shared/corpus/eltec-deu)")
        return 1
    texts = list(iter_texts(paths))
    characters = sum(map(len, texts))
    print(
        f"text: {len(paths)} shards, {len(texts):,} documents, {characters / 1e6:.1f} M characters; "
        f"vocab_size {args.vocab_size:,}; best of {args.repeats}"
    )

    logging_quiet()
    bare = {"nanochat": bare_nanochat, "neox": bare_neox}
    rows = []
    with tempfile.TemporaryDirectory(prefix="nanogerman-bench-tok-") as scratch:
        for kind in args.kinds.split(","):
            spec = TokenizerSpec.from_schema(name=f"bench_{kind}", kind=kind, vocab_size=args.vocab_size)
            bare_times, stage_times = [], []
            for repeat in range(args.repeats):
                seconds, reached = timed(bare[kind], texts, spec)
                bare_times.append(seconds)
                seconds, stats = timed(train_tokenizer, spec, paths, Path(scratch) / f"{kind}-{repeat}")
                stage_times.append(seconds)
                if stats["vocab_size"] != reached:
                    print(f"warning: {kind}: the stage reached {stats['vocab_size']} tokens, the bare trainer {reached}")
            best_bare, best_stage = min(bare_times), min(stage_times)
            rows.append((kind, best_bare, best_stage, stats))
            print(
                f"{kind:9s} bare  {best_bare:7.2f} s  {characters / best_bare / 1e6:6.2f} M chars/s   (runs: {fmt(bare_times)})"
            )
            print(
                f"{kind:9s} stage {best_stage:7.2f} s  {characters / best_stage / 1e6:6.2f} M chars/s   (runs: {fmt(stage_times)})"
                f"  of which training {stats['training_seconds']:.2f} s"
            )
            print(f"{kind:9s} stage/bare = {best_stage / best_bare:.3f}  (goal <= 1.05); vocab {stats['vocab_size']:,}")
    return 0


def fmt(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def logging_quiet() -> None:
    """rustbpe logs every percent of its merges at INFO; keep the benchmark's output short."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")


if __name__ == "__main__":
    raise SystemExit(main())
