# Corpus stage: one job per shard, fetched from a local folder, the Hugging Face Hub or gs://.


def corpus_outputs():
    return [f"{RESULTS}/corpus/corpus.json"]


rule corpus_shard:
    output:
        shard=f"{RESULTS}/corpus/{{shard}}.parquet",
        manifest=f"{RESULTS}/corpus/{{shard}}.json",
    log:
        f"{RESULTS}/logs/corpus/{{shard}}.log",
    resources:
        downloads=1,  # cap parallel downloads with --resources downloads=N
    params:
        # Only what identifies the data: changing the retry settings reruns nothing.
        source=lambda wildcards: {
            key: config["corpus"][key]
            for key in ("source", "location", "revision", "file_pattern")
        },
        index=lambda wildcards: int(wildcards.shard.removeprefix("shard_")),
        max_empty_share=config["corpus"]["max_empty_share"],
    script:
        "../scripts/fetch_shard.py"


rule corpus_summary:
    input:
        manifests=[
            f"{RESULTS}/corpus/{shard_name(index)}.json"
            for index in all_shards(config)
        ],
    output:
        summary=f"{RESULTS}/corpus/corpus.json",
    log:
        f"{RESULTS}/logs/corpus/summary.log",
    localrule: True
    params:
        shard_sets={
            name: shard_set(config, name) for name in config["corpus"]["shard_sets"]
        },
    script:
        "../scripts/summarize_corpus.py"
