"""Corpus stage: shards from a local folder, the Hub (loopback stand-in) and GCS (emulator)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hub_stand_in import HubStandIn

from nanogerman.corpus import ShardError, ShardSource, check_shard, fetch_shard
from nanogerman.hub import retry_transient
from nanogerman.provenance import file_sha256 as sha256_of


def write_parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def texts_table(texts) -> pa.Table:
    return pa.table({"text": pa.array(texts, type=pa.string())})


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


# --- checking a shard -------------------------------------------------------------------


def test_check_shard_measures_the_sample(sample_dir):
    path = sample_dir / "shard_00000.parquet"
    texts = pq.read_table(path).column("text")
    stats = check_shard(path)
    assert stats.rows == len(texts)
    assert stats.characters == sum(len(text) for text in texts.to_pylist())
    assert stats.text_bytes == sum(len(text.encode("utf-8")) for text in texts.to_pylist())
    assert stats.file_bytes == path.stat().st_size
    assert stats.sha256 == sha256_of(path)
    assert stats.empty_texts == 0


def _invalid_utf8_table() -> pa.Table:
    raw = pa.array([b"gut", b"kaputt \xff\xfe", b"ok"], type=pa.binary())
    return pa.table({"text": raw.view(pa.string())})


def _truncated(path: Path) -> None:
    write_parquet(path, texts_table(["Hallo Welt"] * 500))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_SHARDS = [
    ("empty file", lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
    ("not parquet", lambda p: p.write_text("text\nHallo\n"), "not a readable parquet file"),
    ("truncated", _truncated, "not a readable parquet file"),
    ("wrong column", lambda p: write_parquet(p, pa.table({"body": ["Hallo"]})), "no 'text' column (columns: body)"),
    ("integer texts", lambda p: write_parquet(p, pa.table({"text": [1, 2]})), "column 'text' has type int64; expected string"),
    (
        "null texts",
        lambda p: write_parquet(p, texts_table(["a", None, "b", None])),
        "2 null text(s) in column 'text' (first at row 1)",
    ),
    ("no rows", lambda p: write_parquet(p, texts_table([])), "the shard has no rows"),
    ("invalid utf-8", lambda p: write_parquet(p, _invalid_utf8_table()), "invalid UTF-8 in column 'text'"),
    ("all texts empty", lambda p: write_parquet(p, texts_table([""] * 16)), "all 16 texts are empty or whitespace"),
    (
        "all texts whitespace",
        lambda p: write_parquet(p, texts_table(["", " ", "\n\t ", "\u3000"])),
        "all 4 texts are empty or whitespace",
    ),
]


@pytest.mark.parametrize("label, make, message", BAD_SHARDS, ids=[case[0] for case in BAD_SHARDS])
def test_bad_shard_fails_with_one_line_and_leaves_nothing(tmp_path, label, make, message):
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    make(source_dir / "shard_00000.parquet")
    out = tmp_path / "results" / "corpus"
    with pytest.raises(ShardError) as caught:
        fetch_shard(ShardSource.from_schema("local", str(source_dir)), 0, out / "shard_00000.parquet", out / "shard_00000.json")
    assert message in str(caught.value)
    assert "shard_00000.parquet" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert leftovers(out) == []


def test_a_shard_with_many_blank_texts_warns_naming_it(tmp_path, caplog):
    source_dir = tmp_path / "source"
    write_parquet(source_dir / "shard_00003.parquet", texts_table(["Ein Satz."] * 97 + ["", "  ", "\n"]))
    out = tmp_path / "results" / "corpus"
    manifest = fetch_shard(
        ShardSource.from_schema("local", str(source_dir)),
        3,
        out / "shard_00003.parquet",
        out / "shard_00003.json",
        max_empty_share=0.01,
    )
    assert manifest["blank_texts"] == 3 and manifest["empty_texts"] == 1 and manifest["rows"] == 100
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("shard_00003 (")
    assert "3 of 100 texts (3.0%) are empty or whitespace, more than corpus.max_empty_share (1.0%)" in warnings[0]
    caplog.clear()
    fetch_shard(
        ShardSource.from_schema("local", str(source_dir)),
        3,
        out / "shard_00003.parquet",
        out / "shard_00003.json",
        max_empty_share=0.05,
    )
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


TEXTS = ["Grüße aus Köln.", "Zweiter Text", "Grüße aus Köln."]
TEXT_COLUMNS = [
    ("large_string", pa.array(TEXTS, type=pa.large_string())),
    ("dictionary", pa.array(TEXTS, type=pa.string()).dictionary_encode()),
]


@pytest.mark.parametrize("label, column", TEXT_COLUMNS, ids=[case[0] for case in TEXT_COLUMNS])
def test_large_and_dictionary_encoded_text_columns_are_text(tmp_path, label, column):
    from nanogerman.dataset import iter_texts
    from nanogerman.tokenizer_eval_data import _parquet_batches
    from nanogerman.tokenizer_training import TextCounter, text_batches

    source_dir = tmp_path / "source"
    path = write_parquet(source_dir / "shard_00000.parquet", pa.table({"text": column}))
    assert pq.ParquetFile(path).schema_arrow.field("text").type == column.type  # the type survived the file
    stats = check_shard(path)
    assert stats.rows == 3 and stats.characters == sum(map(len, TEXTS)) and stats.blank_texts == 0
    out = tmp_path / "results" / "corpus"
    fetch_shard(ShardSource.from_schema("local", str(source_dir)), 0, out / "shard_00000.parquet", out / "shard_00000.json")
    assert list(iter_texts(out / "shard_00000.parquet")) == TEXTS  # the dataset stage
    assert [text for batch in text_batches([path], counter=TextCounter()) for text in batch] == TEXTS  # tokenizer training
    assert [text for batch in _parquet_batches(path, "text", 2) for text in batch] == TEXTS  # tokenizer evaluation


def test_missing_local_shard_and_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ShardError, match=r"shard_00007.parquet: shard not found"):
        fetch_shard(ShardSource.from_schema("local", str(tmp_path)), 7, out / "s.parquet", out / "s.json")
    with pytest.raises(ShardError, match="is not a folder"):
        fetch_shard(ShardSource.from_schema("local", str(tmp_path / "nope")), 0, out / "s.parquet", out / "s.json")
    assert leftovers(out) == []


def test_local_fetch_copies_bytes_and_writes_manifest(tmp_path, sample_dir):
    out = tmp_path / "corpus"
    manifest = fetch_shard(
        ShardSource.from_schema("local", str(sample_dir)), 4, out / "shard_00004.parquet", out / "shard_00004.json"
    )
    original = sample_dir / "shard_00004.parquet"
    assert (out / "shard_00004.parquet").read_bytes() == original.read_bytes()
    assert json.loads((out / "shard_00004.json").read_text()) == manifest
    assert manifest["sha256"] == sha256_of(original)
    assert manifest["rows"] == pq.read_metadata(original).num_rows
    assert manifest["source"] == {"kind": "local", "uri": str(original)}
    assert leftovers(out) == ["shard_00004.json", "shard_00004.parquet"]


def test_custom_file_pattern(tmp_path, sample_dir):
    (tmp_path / "src").mkdir()
    shutil.copy(sample_dir / "shard_00001.parquet", tmp_path / "src" / "part-1.parquet")
    source = ShardSource.from_schema("local", str(tmp_path / "src"), file_pattern="part-{index}.parquet")
    manifest = fetch_shard(source, 1, tmp_path / "o" / "shard_00001.parquet", tmp_path / "o" / "shard_00001.json")
    assert manifest["source"]["uri"].endswith("part-1.parquet")


# --- retries ------------------------------------------------------------------------------


def test_retry_transient_backs_off_then_succeeds():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset by peer")
        return "done"

    assert retry_transient(flaky, retries=4, backoff_seconds=0.5, label="x", sleep=waits.append) == "done"
    assert waits == [0.5, 1.0]


def test_retry_transient_gives_up_and_never_retries_permanent_errors():
    waits = []
    with pytest.raises(ConnectionError):
        retry_transient(
            lambda: (_ for _ in ()).throw(ConnectionError("down")), retries=2, backoff_seconds=1, label="x", sleep=waits.append
        )
    assert waits == [1, 2]
    waits.clear()
    with pytest.raises(KeyError):
        retry_transient(
            lambda: (_ for _ in ()).throw(KeyError("gone")),
            retries=2,
            backoff_seconds=1,
            label="x",
            permanent=(KeyError,),
            sleep=waits.append,
        )
    assert waits == []


# --- the Hub, through the real huggingface_hub client against a loopback stand-in -------


@pytest.fixture
def hub(tmp_path, sample_dir, monkeypatch):
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "datasets" / "someone" / "german-data"
    repo.mkdir(parents=True)
    for index in (0, 1):
        shutil.copy(sample_dir / f"shard_0000{index}.parquet", repo)
    (repo / "shard_00002.parquet").write_text("not parquet")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with HubStandIn(tmp_path / "hub") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def hub_source(**overrides) -> ShardSource:
    settings = dict(kind="hub", location="someone/german-data", retries=3, backoff_seconds=0.01)
    return ShardSource.from_schema(**{**settings, **overrides})


@pytest.mark.network
def test_hub_download_records_the_commit(tmp_path, hub, sample_dir):
    out = tmp_path / "corpus"
    manifest = fetch_shard(hub_source(), 1, out / "shard_00001.parquet", out / "shard_00001.json")
    assert (out / "shard_00001.parquet").read_bytes() == (sample_dir / "shard_00001.parquet").read_bytes()
    commit = hub.commit_of(tmp_path / "hub" / "datasets" / "someone" / "german-data")
    assert manifest["source"] == {
        "kind": "hub",
        "uri": "hf://datasets/someone/german-data@main/shard_00001.parquet",
        "revision": "main",
        "commit": commit,
    }
    pinned = fetch_shard(hub_source(revision=commit), 0, out / "shard_00000.parquet", out / "shard_00000.json")
    assert pinned["source"]["commit"] == commit


@pytest.mark.network
def test_hub_transient_failure_is_retried(tmp_path, hub):
    hub.fail("shard_00000", times=2, status=503, method="GET")
    out = tmp_path / "corpus"
    fetch_shard(hub_source(), 0, out / "shard_00000.parquet", out / "shard_00000.json")
    gets = [path for method, path in hub.requests if method == "GET"]
    assert len(gets) == 3
    assert (out / "shard_00000.parquet").is_file()


@pytest.mark.network
def test_hub_download_cut_midway_resumes_with_a_range_request(tmp_path, hub):
    """huggingface_hub keeps what it received (in whole download chunks) and asks for the rest."""
    import base64
    import os

    from huggingface_hub import constants

    chunk = constants.DOWNLOAD_CHUNK_SIZE
    rows = [base64.b64encode(os.urandom(3 * 1024)).decode() for _ in range(int(3.5 * chunk / 4096))]
    big = write_parquet(tmp_path / "hub" / "datasets" / "someone" / "german-data" / "shard_00003.parquet", texts_table(rows))
    assert big.stat().st_size > 2 * chunk
    hub.fail("shard_00003", times=1, status="cut", method="GET")
    out = tmp_path / "corpus"
    fetch_shard(hub_source(), 3, out / "shard_00003.parquet", out / "shard_00003.json")
    assert (out / "shard_00003.parquet").read_bytes() == big.read_bytes()
    assert hub.ranges[0] is None and len(hub.ranges) == 2
    resumed_from = int(hub.ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert resumed_from >= chunk  # not a restart from byte 0


@pytest.mark.network
def test_hub_failure_that_outlives_the_retries(tmp_path, hub):
    hub.fail("shard_00000", times=100, status=503, method="GET")
    out = tmp_path / "corpus"
    with pytest.raises(ShardError, match=r"the Hub did not answer after 2 attempts \(.*503"):
        fetch_shard(hub_source(retries=1), 0, out / "shard_00000.parquet", out / "shard_00000.json")
    assert leftovers(out) == []


@pytest.mark.network
@pytest.mark.parametrize(
    "overrides, index, message",
    [
        ({"location": "someone/no-such-repo"}, 0, "dataset repo 'someone/no-such-repo' not found on the Hub"),
        ({"revision": "v9"}, 0, "revision 'v9' not found in 'someone/german-data'"),
        ({}, 5, "shard_00005.parquet: shard not found in the Hub repo"),
        ({}, 2, "not a readable parquet file"),
    ],
    ids=["unknown repo", "unknown revision", "missing shard", "corrupt shard"],
)
def test_hub_permanent_errors_are_one_line_and_not_retried(tmp_path, hub, overrides, index, message):
    out = tmp_path / "corpus"
    with pytest.raises(ShardError) as caught:
        fetch_shard(hub_source(**overrides), index, out / "s.parquet", out / "s.json")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert len([1 for method, _ in hub.requests if method == "GET"]) <= 1
    assert leftovers(out) == []


# --- GCS, through gcsfs against gcp-storage-emulator on loopback -------------------------


@pytest.mark.network
def test_gcs_source(tmp_path, gcs_emulator, sample_dir):
    from nanogerman.gcs import gcs_filesystem

    filesystem = gcs_filesystem()
    filesystem.mkdir("corpus-bucket")
    filesystem.put_file(str(sample_dir / "shard_00003.parquet"), "corpus-bucket/german/shard_00003.parquet")
    out = tmp_path / "corpus"
    source = ShardSource.from_schema("gcs", "gs://corpus-bucket/german")
    manifest = fetch_shard(source, 3, out / "shard_00003.parquet", out / "shard_00003.json")
    assert (out / "shard_00003.parquet").read_bytes() == (sample_dir / "shard_00003.parquet").read_bytes()
    assert manifest["source"]["uri"] == "gs://corpus-bucket/german/shard_00003.parquet"
    with pytest.raises(ShardError, match=r"gs://corpus-bucket/german/shard_00009.parquet: shard not found"):
        fetch_shard(source, 9, out / "shard_00009.parquet", out / "shard_00009.json")
    with pytest.raises(ShardError, match=r"gs://no-such-bucket: the bucket does not exist"):
        fetch_shard(
            ShardSource.from_schema("gcs", "gs://no-such-bucket/x"), 0, out / "shard_00000.parquet", out / "shard_00000.json"
        )
    assert leftovers(out) == ["shard_00003.json", "shard_00003.parquet"]


# --- through Snakemake --------------------------------------------------------------------


def corpus_only(config: dict, location: str, sets: dict) -> dict:
    config["corpus"].update(location=location, shard_sets=sets)
    return config


def test_workflow_corpus_stage_and_bad_shard(tmp_path, base_config, snakemake_run, sample_dir):
    """The corpus target builds from the sample; rerunning plans nothing; a bad shard fails in one line."""
    result = snakemake_run(tmp_path / "good", base_config, "results/corpus/corpus.json")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "good" / "results" / "corpus" / "corpus.json").read_text())
    expected_rows = sum(pq.read_metadata(sample_dir / f"shard_0000{i}.parquet").num_rows for i in range(4))
    assert summary["shard_sets"]["train"]["rows"] == expected_rows
    assert summary["shard_sets"]["validation"]["shards"] == 1
    again = snakemake_run(tmp_path / "good", base_config, "-n", "results/corpus/corpus.json")
    assert "Nothing to be done" in again.stdout + again.stderr

    broken = tmp_path / "broken-source"
    shutil.copytree(sample_dir, broken, ignore=shutil.ignore_patterns("docs"))
    write_parquet(broken / "shard_00002.parquet", pa.table({"body": ["Hallo"]}))
    result = snakemake_run(
        tmp_path / "bad", corpus_only(base_config, str(broken), {"train": "0-3", "validation": 4}), "results/corpus/corpus.json"
    )
    assert result.returncode != 0
    assert "shard_00002.parquet: no 'text' column (columns: body)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad" / "results" / "corpus" / "shard_00002.parquet").exists()
    assert not (tmp_path / "bad" / "results" / "corpus" / "corpus.json").exists()


@pytest.mark.network
def test_workflow_reads_the_hub_through_hf_endpoint(tmp_path, hub, base_config, snakemake_run, sample_dir):
    """The user's route: corpus.source hub, HF_ENDPOINT and HF_HOME in the environment of snakemake."""
    base_config["corpus"].update(source="hub", location="someone/german-data", shard_sets={"train": [0], "validation": 1})
    base_config["corpus"]["download"] = {"retries": 2, "backoff_seconds": 0.01}
    hub.fail("shard_00001", times=1, status=503, method="GET")
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home")}
    result = snakemake_run(tmp_path / "run", base_config, "results/corpus/corpus.json", env=env)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "run" / "results" / "corpus" / "shard_00001.json").read_text())
    assert manifest["sha256"] == sha256_of(sample_dir / "shard_00001.parquet")
    assert manifest["source"]["commit"] == hub.commit_of(tmp_path / "hub" / "datasets" / "someone" / "german-data")
    assert "attempt 1 failed" in (tmp_path / "run" / "results" / "logs" / "corpus" / "shard_00001.log").read_text()


@pytest.mark.eltec
def test_local_source_on_the_real_corpus(tmp_path, base_config, snakemake_run, eltec_dir):
    """ELTeC shards 4 (short training shard) and 5 (validation) through the workflow's corpus stage."""
    config = corpus_only(base_config, str(eltec_dir), {"train": 4, "validation": 5})
    result = snakemake_run(tmp_path, config, "results/corpus/corpus.json")
    assert result.returncode == 0, result.stderr
    for index in (4, 5):
        manifest = json.loads((tmp_path / "results" / "corpus" / f"shard_0000{index}.json").read_text())
        table = pq.read_table(eltec_dir / f"shard_0000{index}.parquet")
        assert manifest["rows"] == table.num_rows
        assert manifest["characters"] == pc.sum(pc.utf8_length(table.column("text"))).as_py()
        assert manifest["sha256"] == sha256_of(eltec_dir / f"shard_0000{index}.parquet")
