# Tokenizer stage: one job per entry of `tokenizers`, trained on a corpus shard set and
# written as a folder that AutoTokenizer.from_pretrained loads offline.


def tokenizer_names():
    return [entry["name"] for entry in config["tokenizers"]]


def tokenizer_dir(name):
    """results/tokenizers/<name>/: tokenizer.json, tokenizer_config.json, stats.json (+ tokenizer.pkl for nanochat)."""
    return f"{RESULTS}/tokenizers/{name}"


def tokenizer_outputs():
    return [tokenizer_dir(name) for name in tokenizer_names()]


rule tokenizer_train:
    input:
        shards=lambda wildcards: [
            f"{RESULTS}/corpus/{shard}.parquet"
            for shard in shards_of(
                tokenizer_entry(config, wildcards.tokenizer)["shards"]
            )
        ],
    output:
        folder=directory(f"{RESULTS}/tokenizers/{{tokenizer}}"),
    log:
        f"{RESULTS}/logs/tokenizers/{{tokenizer}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tokenizers/{{tokenizer}}.tsv"
    threads: 2
    params:
        spec=lambda wildcards: tokenizer_entry(config, wildcards.tokenizer),
    script:
        "../scripts/train_tokenizer.py"
