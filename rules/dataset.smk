# Dataset stage: the corpus as a TFDS dataset for MaxText. One job per corpus shard writes
# that shard's records (run anywhere, in parallel); one job assembles the TFDS folder; one
# publishes it to gs:// (optional) and writes the manifest the training stage reads.


def dataset_manifest():
    """The manifest the training stage reads: name, version, format, data_dir, splits, checksums."""
    return f"{RESULTS}/dataset/dataset.json"


def dataset_outputs():
    return [dataset_manifest()]


def dataset_split_parts(split):
    key = {"train": "train_shards", "validation": "validation_shards"}[split]
    return [
        f"{RESULTS}/dataset/parts/{shard}"
        for shard in shards_of(config["dataset"][key])
    ]


rule dataset_part:
    input:
        shard=f"{RESULTS}/corpus/{{shard}}.parquet",
    output:
        part=directory(f"{RESULTS}/dataset/parts/{{shard}}"),
    log:
        f"{RESULTS}/logs/dataset/part_{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/dataset/part_{{shard}}.tsv"
    params:
        file_format=config["dataset"]["format"],
        files_per_shard=config["dataset"]["files_per_shard"],
    script:
        "../scripts/dataset_part.py"


rule dataset_assemble:
    input:
        train=dataset_split_parts("train"),
        validation=dataset_split_parts("validation"),
    output:
        folder=directory(
            f"{RESULTS}/dataset/tfds/{config['dataset']['name']}/{config['dataset']['version']}"
        ),
        build=f"{RESULTS}/dataset/build.json",
    log:
        f"{RESULTS}/logs/dataset/assemble.log",
    benchmark:
        f"{RESULTS}/benchmarks/dataset/assemble.tsv"
    params:
        data_dir=lambda wildcards, output: str(Path(output.folder).parents[1]),  # <data_dir>/<name>/<version>
        name=config["dataset"]["name"],
        version=config["dataset"]["version"],
        file_format=config["dataset"]["format"],
    script:
        "../scripts/assemble_dataset.py"


rule dataset_publish:
    input:
        build=f"{RESULTS}/dataset/build.json",
        folder=rules.dataset_assemble.output.folder,
    output:
        manifest=dataset_manifest(),
    log:
        f"{RESULTS}/logs/dataset/publish.log",
    localrule: True
    params:
        publish_to=config["dataset"]["publish_to"],
    script:
        "../scripts/publish_dataset.py"
