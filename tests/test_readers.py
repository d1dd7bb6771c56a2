"""The one reader of each stage manifest and of the parquet text column: one wording for a bad file, whoever reads it."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nanogerman.dataset import DatasetError
from nanogerman.dataset import iter_texts as dataset_texts
from nanogerman.export import load_manifest
from nanogerman.export_check import ExportError
from nanogerman.job import RunInputs, TrainingError
from nanogerman.manifests import ManifestError, read_dataset_manifest, read_tokenizer_stats, read_train_manifest
from nanogerman.report_data import ReportError
from nanogerman.report_data import read_train_manifest as report_run
from nanogerman.tokenizer_training import TokenizerError
from nanogerman.tokenizer_training import iter_texts as tokenizer_texts


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "no such file"),
        ("{not json", "Expecting property name"),
        ("[1, 2]", "a list, not an object"),
    ],
)
def test_a_missing_or_corrupt_train_json_is_one_line_naming_the_file_and_the_fix(tmp_path, content, reason):
    path = tmp_path / "results" / "train" / "x" / "train.json"
    path.parent.mkdir(parents=True)
    if content is not None:
        path.write_text(content)
    expected = (
        f"{path}: unreadable training manifest (missing or not valid JSON: {reason}"
        f"); rerun the job that writes it (snakemake --cores all --force {path})"
    )
    for read, error in ((read_train_manifest, ManifestError), (load_manifest, ExportError), (report_run, ReportError)):
        with pytest.raises(error) as caught:
            read(path)
        text = one_line(caught)
        assert text.startswith(f"{path}: unreadable training manifest (missing or not valid JSON: {reason}")
        assert text.endswith("); rerun the job that writes it (snakemake --cores all --force " + f"{path})")
    with pytest.raises(ManifestError) as caught:
        read_train_manifest(path)
    if content != "{not json":  # the decoder's message carries its position; the rest is fixed
        assert one_line(caught) == expected


def test_a_manifest_without_a_key_names_the_key_the_file_and_the_fix(tmp_path):
    dataset, tokenizer = tmp_path / "dataset.json", tmp_path / "tok"
    tokenizer.mkdir()
    dataset.write_text(json.dumps({"format": "array_record"}))
    (tokenizer / "stats.json").write_text(json.dumps({"vocab_size": 0}))
    model = tmp_path / "model.yml"
    model.write_text("base_config: base.yml\n")
    with pytest.raises(TrainingError) as caught:
        RunInputs.load(dataset, tokenizer, model)
    assert one_line(caught) == (
        f"{dataset}: the dataset manifest has no 'maxtext'; rerun the job that writes it (snakemake --cores all --force {dataset})"
    )
    dataset.write_text(json.dumps({"maxtext": {"dataset_type": "grain"}}))
    assert read_dataset_manifest(dataset).maxtext == {"dataset_type": "grain"}
    with pytest.raises(TrainingError) as caught:
        RunInputs.load(dataset, tokenizer, model)
    stats = tokenizer / "stats.json"
    assert one_line(caught) == (
        f"{stats}: vocab_size is 0 in the tokenizer stats; expected an integer >= 1; "
        f"rerun the job that writes it (snakemake --cores all --force {stats})"
    )
    stats.write_text(json.dumps({"vocab_size": 512, "bos_token_id": 1}))
    assert read_tokenizer_stats(tokenizer).vocab_size == 512
    assert read_tokenizer_stats(tokenizer)["bos_token_id"] == 1


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda path: pq.write_table(pa.table({"body": ["Hallo"]}), path), "no 'text' column (columns: body)"),
        (lambda path: pq.write_table(pa.table({"text": [1, 2]}), path), "column 'text' has type int64; expected string"),
        (lambda path: path.write_bytes(b"PAR1 not really"), "not a readable parquet file ("),
    ],
)
def test_the_text_reader_fails_alike_for_the_dataset_and_the_tokenizer_stage(tmp_path, write, message):
    path = tmp_path / "shard_00000.parquet"
    write(path)
    for read, error in ((dataset_texts, DatasetError), (tokenizer_texts, TokenizerError)):
        with pytest.raises(error) as caught:
            list(read([path]) if read is tokenizer_texts else read(path))
        assert one_line(caught).startswith(f"{path}: {message}")


def test_the_text_reader_gives_both_stages_the_same_texts(tmp_path):
    path = tmp_path / "shard_00000.parquet"
    texts = ["Erster Text.", "Zweiter, längerer Text.", "Dritter."]
    dictionary = pa.array(texts).dictionary_encode()  # decoded to plain strings by the one reader
    pq.write_table(pa.table({"text": dictionary, "id": [1, 2, 3]}), path, row_group_size=2)
    assert list(dataset_texts(path, batch_size=2)) == texts
    assert list(tokenizer_texts([path], batch_size=2)) == texts
