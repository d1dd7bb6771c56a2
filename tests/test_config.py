"""The config is validated before any job runs; each problem is one line naming the key and the fix."""

from __future__ import annotations

import copy

import pytest
from conftest import default_config, delete_key, set_key

from nanogerman.config import ConfigError, all_shards, parse_shards, shard_set, validate_config


def with_change(change):
    config = default_config()
    change(config)
    return config


MALFORMED = [
    ("unknown top-level key", lambda c: c.update(copus={}), ["unknown key copus", "did you mean corpus?"]),
    (
        "missing section",
        lambda c: (c.clear(), c.update(results_dir="out")),
        ["missing key corpus", "expected where the parquet shards come from"],
    ),
    ("bad source", set_key(["corpus", "source"], "ftp"), ["corpus.source is 'ftp'", "expected one of 'local', 'hub', 'gcs'"]),
    ("missing location", delete_key(["corpus", "location"]), ["missing key corpus.location", "expected a folder path"]),
    ("misspelled key", set_key(["corpus", "revison"], "main"), ["unknown key corpus.revison", "did you mean revision?"]),
    (
        "hub repo id",
        lambda c: c["corpus"].update(source="hub", location="just-a-name"),
        ["corpus.location is 'just-a-name'", "repo id like 'stefan-it/nanochat-german-data'"],
    ),
    (
        "gcs uri",
        lambda c: c["corpus"].update(source="gcs", location="bucket/prefix"),
        ["corpus.location is 'bucket/prefix'", "gs://bucket/prefix"],
    ),
    ("shard spec text", set_key(["corpus", "shard_sets", "train"], "0..3"), ["corpus.shard_sets.train is '0..3'", "'0-239'"]),
    (
        "negative shard",
        set_key(["corpus", "shard_sets", "train"], [-1]),
        ["corpus.shard_sets.train[0] is -1", "less than the minimum of 0"],
    ),
    (
        "reversed range",
        set_key(["corpus", "shard_sets", "train"], "5-2"),
        ["corpus.shard_sets.train", "'5-2'", "end is before its start"],
    ),
    ("no shard sets", set_key(["corpus", "shard_sets"], {}), ["corpus.shard_sets is {}"]),
    ("shard set name", set_key(["corpus", "shard_sets", "Train"], 1), ["corpus.shard_sets", "'Train'", "lowercase"]),
    ("negative retries", set_key(["corpus", "download"], {"retries": -1}), ["corpus.download.retries is -1", "integer >= 0"]),
    (
        "pattern without index",
        set_key(["corpus", "file_pattern"], "shard.parquet"),
        ["corpus.file_pattern is 'shard.parquet'", "{index}"],
    ),
    ("wrong type", set_key(["results_dir"], 5), ["results_dir is 5 (int); expected string"]),
    (
        "eval dataset with two sources",
        set_key(["tokenizer_eval"], {"datasets": [{"name": "v", "shards": "validation", "path": "x.txt"}]}),
        ["tokenizer_eval.datasets[0] is", "exactly one source"],
    ),
    (
        "eval dataset without source",
        set_key(["tokenizer_eval"], {"datasets": [{"name": "v"}]}),
        ["tokenizer_eval.datasets[0] is {'name': 'v'}", "exactly one source"],
    ),
    (
        "eval hub id",
        set_key(["tokenizer_eval"], {"datasets": [{"name": "v", "hub": "germeval14"}]}),
        ["tokenizer_eval.datasets[0].hub is 'germeval14'", "repo id like 'german-tokenizer-benchmark/germeval14'"],
    ),
    (
        "eval file type",
        set_key(["tokenizer_eval"], {"datasets": [{"name": "v", "path": "texts.csv"}]}),
        ["tokenizer_eval.datasets[0].path is 'texts.csv'", ".parquet", ".jsonl", ".txt"],
    ),
    (
        "eval samples",
        set_key(["tokenizer_eval"], {"datasets": [{"name": "v", "path": "t.txt", "samples": 0}]}),
        ["tokenizer_eval.datasets[0].samples is 0", "integer >= 1"],
    ),
    (
        "eval misspelled key",
        set_key(["tokenizer_eval"], {"datasets": [{"name": "v", "path": "t.jsonl", "text_feld": "body"}]}),
        ["unknown key tokenizer_eval.datasets[0].text_feld", "did you mean text_field?"],
    ),
    (
        "eval trained",
        set_key(["tokenizer_eval"], {"trained": "all"}),
        ["tokenizer_eval.trained is 'all' (str); expected boolean or array"],
    ),
    (
        "eval reference without path",
        set_key(["tokenizer_eval"], {"references": [{"name": "gpt2"}]}),
        ["missing key tokenizer_eval.references[0].path", "Hub model repo id"],
    ),
    (
        "eval trust_remote_code",
        set_key(["tokenizer_eval"], {"references": [{"name": "r", "path": "a/b", "trust_remote_code": "yes"}]}),
        ["tokenizer_eval.references[0].trust_remote_code is 'yes' (str); expected boolean"],
    ),
    (
        "eval reference name",
        set_key(["tokenizer_eval"], {"references": [{"name": "LLäMmlein", "path": "a/b"}]}),
        ["tokenizer_eval.references[0].name is 'LLäMmlein'", "lowercase letters"],
    ),
    ("eval batch size", set_key(["tokenizer_eval"], {"batch_size": 0}), ["tokenizer_eval.batch_size is 0", "integer >= 1"]),
]


@pytest.mark.parametrize("label, change, expected", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_config_gives_one_clear_line(label, change, expected):
    with pytest.raises(ConfigError) as caught:
        validate_config(with_change(change))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("config error: ")
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_empty_config_is_refused():
    with pytest.raises(ConfigError, match="config is empty"):
        validate_config({})


def test_defaults_are_filled_and_input_is_not_modified():
    config = default_config()
    before = copy.deepcopy(config)
    validated = validate_config(config)
    assert config == before
    assert validated["results_dir"] == "results"
    assert validated["corpus"]["revision"] == "main"
    assert validated["corpus"]["file_pattern"] == "shard_{index:05d}.parquet"
    assert validated["corpus"]["download"] == {"retries": 5, "backoff_seconds": 2.0}


def test_shipped_configs_are_valid(repo):
    import yaml

    for path in sorted((repo / "config").glob("*.yaml")):
        if path.name == "schema.yaml":
            continue
        validate_config(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "spec, indices",
    [(4, [4]), ([2, 0, 2], [0, 2]), ("0-3", [0, 1, 2, 3]), ("0-2, 7", [0, 1, 2, 7]), (" 5 ", [5])],
)
def test_parse_shards(spec, indices):
    assert parse_shards(spec) == indices


def test_shard_sets_and_their_union():
    config = validate_config(with_change(set_key(["corpus", "shard_sets"], {"vocab": "0-1", "train": "1-3", "validation": 4})))
    assert shard_set(config, "vocab") == [0, 1]
    assert all_shards(config) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="unknown shard set 'nope'; corpus.shard_sets defines train, validation, vocab"):
        shard_set(config, "nope")


def test_snakemake_stops_before_any_job_with_one_line(tmp_path, base_config, snakemake_run):
    base_config["corpus"]["source"] = "ftp"
    result = snakemake_run(tmp_path, base_config, "-n")
    assert result.returncode == 1
    assert "config error: corpus.source is 'ftp'; expected one of 'local', 'hub', 'gcs'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_the_same_settings_in_another_key_order_give_the_same_params(base_config):
    """Snakemake compares params by their text: the validated config has its mapping keys in one canonical order."""
    import json

    reordered = json.loads(json.dumps(base_config))
    reordered["tokenizers"] = [dict(reversed(list(entry.items()))) for entry in reordered["tokenizers"]]
    reordered = dict(reversed(list(reordered.items())))
    first, second = validate_config(base_config), validate_config(reordered)
    assert repr(first) == repr(second)
    assert list(first) == sorted(first) and list(first["tokenizers"][0]) == sorted(first["tokenizers"][0])
    assert [entry["name"] for entry in first["tokenizers"]] == [entry["name"] for entry in base_config["tokenizers"]]


# --- defaults live only in the schema -------------------------------------------------------------


def test_settings_classes_take_the_schemas_defaults_and_declare_none_of_their_own(base_config):
    """Each class built from a config section has no default for a key of that section: from_schema fills them."""
    import dataclasses

    from nanogerman.corpus import ShardSource
    from nanogerman.evaluation import EvalSettings, ForwardSettings
    from nanogerman.offline_tasks import NextPassageSpec
    from nanogerman.report_flags import FlagSettings
    from nanogerman.schema import schema_defaults
    from nanogerman.tokenizer_training import TokenizerSpec

    config = validate_config({**base_config, "report": {}, "evaluation": {"tasks": []}})
    # a tokenizers entry with only the keys that have no default
    tokenizer = {"name": "t", "kind": "neox", "shards": base_config["tokenizers"][0]["shards"]}
    built = {
        EvalSettings: (EvalSettings.from_schema(), EvalSettings.from_config(config["evaluation"])),
        ForwardSettings: (ForwardSettings.from_schema(), ForwardSettings.from_config(config["evaluation"])),
        NextPassageSpec: (NextPassageSpec.from_schema(), NextPassageSpec.from_config(config["evaluation"]["next_passage"])),
        FlagSettings: (FlagSettings.from_schema(), FlagSettings.from_section(config["report"]["flags"])),
        ShardSource: (
            ShardSource.from_schema("local", base_config["corpus"]["location"]),
            ShardSource.from_config(config["corpus"]),
        ),
        TokenizerSpec: (
            TokenizerSpec.from_schema("t", "neox"),
            TokenizerSpec.from_config(
                validate_config({**base_config, "tokenizers": [*base_config["tokenizers"], tokenizer]})["tokenizers"][-1]
            ),
        ),
    }
    sections = {
        EvalSettings: schema_defaults("evaluation"),
        ForwardSettings: schema_defaults("evaluation"),
        NextPassageSpec: schema_defaults("evaluation", "next_passage"),
        FlagSettings: schema_defaults("report", "flags"),
        ShardSource: {**schema_defaults("corpus"), **schema_defaults("corpus", "download")},
        TokenizerSpec: schema_defaults("tokenizers", "items"),
    }
    for cls, (from_schema, from_config) in built.items():
        assert from_schema == from_config, cls  # the schema's defaults, as a validated config without the keys has them
        mirrored = [field.name for field in dataclasses.fields(cls) if field.name in sections[cls]]
        assert len(mirrored) >= 3, (cls, mirrored)
        assert all(field.default is dataclasses.MISSING for field in dataclasses.fields(cls) if field.name in mirrored), cls
    assert EvalSettings.from_schema(limit=5).limit == 5
    with pytest.raises(TypeError):
        EvalSettings.from_schema(batch=4)  # a typo is an error, not a silently ignored change
