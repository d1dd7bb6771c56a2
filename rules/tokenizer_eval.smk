# Tokenizer evaluation stage: GerTokEval's metrics for the trained tokenizers and for reference
# tokenizers (Hub ids or local folders). Hub datasets are fetched once each; one job per
# tokenizer writes results/tokenizer_eval/<name>.json; one job writes the tables and plots.

from nanogerman.plots import PLOT_FORMATS
from nanogerman.tokenizer_eval_summary import PLOT_NAMES

TOKENIZER_EVAL = f"{RESULTS}/tokenizer_eval"
TOKENIZER_EVAL_SUMMARY = f"{TOKENIZER_EVAL}/summary"


def tokenizer_eval_references():
    return config["tokenizer_eval"]["references"]


def tokenizer_eval_trained():
    """The trained tokenizers to evaluate: all (true), none (false) or the listed names, in that order."""
    chosen = config["tokenizer_eval"]["trained"]
    if isinstance(chosen, list):
        return list(chosen)
    return tokenizer_names() if chosen else []


def tokenizer_eval_names():
    """References first, then trained tokenizers: the order of the seed's table."""
    return [
        entry["name"] for entry in tokenizer_eval_references()
    ] + tokenizer_eval_trained()


def tokenizer_eval_source(name):
    for entry in tokenizer_eval_references():
        if entry["name"] == name:
            return {"kind": "reference", **entry}
    if name in tokenizer_eval_trained():
        return {"kind": "trained", "name": name, "path": tokenizer_dir(name)}
    raise ValueError(
        f"{name!r} is not a tokenizer of tokenizer_eval (trained or references)"
    )


def tokenizer_eval_dataset_files(entry):
    """The local files the evaluation reads for a dataset entry."""
    if "shards" in entry:
        return [
            f"{RESULTS}/corpus/{shard}.parquet" for shard in shards_of(entry["shards"])
        ]
    if "hub" in entry:
        return [f"{TOKENIZER_EVAL}/datasets/{entry['name']}.parquet"]
    return [entry["path"]]


def tokenizer_eval_datasets():
    """What each evaluation job reads: files, text field and cap per dataset (hub ones already fetched and cut)."""
    datasets = []
    for entry in config["tokenizer_eval"]["datasets"]:
        local = "path" in entry
        datasets.append(
            {
                "name": entry["name"],
                "files": tokenizer_eval_dataset_files(entry),
                "text_field": entry["text_field"] if local else "text",
                "samples": None if "hub" in entry else entry["samples"],
                "source": {
                    key: entry[key]
                    for key in (
                        "shards",
                        "hub",
                        "revision",
                        "split",
                        "path",
                        "text_field",
                        "samples",
                    )
                    if key in entry
                },
            }
        )
    return datasets


def tokenizer_eval_hub_entry(name):
    for entry in config["tokenizer_eval"]["datasets"]:
        if entry["name"] == name and "hub" in entry:
            return entry
    raise ValueError(f"{name!r} is not a hub dataset of tokenizer_eval.datasets")


def tokenizer_eval_input(wildcards):
    inputs = {
        "texts": [
            path for dataset in tokenizer_eval_datasets() for path in dataset["files"]
        ]
    }
    if tokenizer_eval_source(wildcards.tokenizer)["kind"] == "trained":
        inputs["tokenizer"] = tokenizer_dir(wildcards.tokenizer)
    return inputs


def tokenizer_eval_summary_files():
    return {
        "markdown": f"{TOKENIZER_EVAL_SUMMARY}/tokenizer_eval.md",
        "csv": f"{TOKENIZER_EVAL_SUMMARY}/tokenizer_eval.csv",
        "per_dataset_csv": f"{TOKENIZER_EVAL_SUMMARY}/tokenizer_eval_per_dataset.csv",
        "latex": f"{TOKENIZER_EVAL_SUMMARY}/tokenizer_eval.tex",
    }


def tokenizer_eval_outputs():
    """The summary tables; nothing when there are no datasets or no tokenizers to evaluate."""
    if not config["tokenizer_eval"]["datasets"] or not tokenizer_eval_names():
        return []
    return list(tokenizer_eval_summary_files().values())


rule tokenizer_eval_dataset:
    output:
        texts=f"{TOKENIZER_EVAL}/datasets/{{eval_dataset}}.parquet",
        manifest=f"{TOKENIZER_EVAL}/datasets/{{eval_dataset}}.json",
    log:
        f"{RESULTS}/logs/tokenizer_eval/dataset_{{eval_dataset}}.log",
    wildcard_constraints:
        eval_dataset=r"[a-z0-9][a-z0-9_.-]*",
    resources:
        downloads=1,
    params:
        spec=lambda wildcards: tokenizer_eval_hub_entry(wildcards.eval_dataset),
        download=config["corpus"]["download"],
    script:
        "../scripts/fetch_eval_dataset.py"


rule tokenizer_eval:
    input:
        unpack(tokenizer_eval_input),
    output:
        result=f"{TOKENIZER_EVAL}/{{tokenizer}}.json",
    log:
        f"{RESULTS}/logs/tokenizer_eval/{{tokenizer}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tokenizer_eval/{{tokenizer}}.tsv"
    threads: 2
    params:
        source=lambda wildcards: tokenizer_eval_source(wildcards.tokenizer),
        datasets=tokenizer_eval_datasets(),
        batch_size=config["tokenizer_eval"]["batch_size"],
    script:
        "../scripts/evaluate_tokenizer.py"


rule tokenizer_eval_summary:
    input:
        results=[f"{TOKENIZER_EVAL}/{name}.json" for name in tokenizer_eval_names()],
    output:
        **tokenizer_eval_summary_files(),
        plots=[
            f"{TOKENIZER_EVAL_SUMMARY}/plots/{name}.{fmt}"
            for name in PLOT_NAMES
            for fmt in PLOT_FORMATS
        ],
    log:
        f"{RESULTS}/logs/tokenizer_eval/summary.log",
    localrule: True
    params:
        plots_dir=lambda wildcards, output: str(Path(output.plots[0]).parent),
    script:
        "../scripts/summarize_tokenizer_eval.py"
