"""Snakemake script for rule tokenizer_eval: GerTokEval's metrics for one tokenizer."""

import os

# The Rust batch encoder uses one thread per core unless told otherwise: keep it to the job's threads.
os.environ["RAYON_NUM_THREADS"] = str(snakemake.threads)  # noqa: F821 (injected by Snakemake)

from nanogerman.stage import run_stage  # noqa: E402
from nanogerman.tokenizer_eval import TokenizerSource, evaluate_tokenizer  # noqa: E402
from nanogerman.tokenizer_eval_data import EvalDataset  # noqa: E402


def main(snakemake):
    evaluate_tokenizer(
        TokenizerSource.from_params(snakemake.params.source),
        [EvalDataset.from_params(dataset) for dataset in snakemake.params.datasets],
        snakemake.output.result,
        batch_size=int(snakemake.params.batch_size),
        threads=snakemake.threads,
    )


run_stage(snakemake, lambda: main(snakemake))  # noqa: F821 (injected by Snakemake)
