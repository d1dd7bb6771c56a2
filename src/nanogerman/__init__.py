"""nanogerman: the library behind the German nano-LM pretraining workflow.

Each stage of the Snakemake workflow (corpus, tokenizers, tokenizer evaluation,
dataset, training, export, evaluation, report) has a module here with pure,
unit-tested functions; the scripts in ``scripts/`` only wire them to Snakemake.
"""

__version__ = "0.1.0"
