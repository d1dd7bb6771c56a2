"""Tokenizer evaluation stage: GerTokEval's metrics, batch encoding, tables, plots, Hub sources, config."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import default_config
from hub_stand_in import HubStandIn

from nanogerman.config import ConfigError, validate_config
from nanogerman.schema import schema_defaults
from nanogerman.tokenizer_eval import (
    TokenizerSource,
    batch_encoders,
    checked_encoder,
    evaluate_texts,
    evaluate_tokenizer,
    load_tokenizer,
    one_at_a_time_encoder,
)
from nanogerman.tokenizer_eval_data import (
    EvalDataset,
    HubDataset,
    TokenizerEvalError,
    fetch_hub_dataset,
    hub_split_files,
    read_text_batches,
)
from nanogerman.tokenizer_eval_summary import format_metric, latex_table, markdown_table, plot_metric, summarize
from nanogerman.tokenizer_training import TokenizerSpec, train_tokenizer

BATCH = schema_defaults("tokenizer_eval")["batch_size"]  # the stage's texts per encoder call
TINY_VOCAB = {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "d": 4, "<s>": 5}


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A word-level tokenizer with a known vocabulary that prepends <s>, saved as a Hugging Face folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(TINY_VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 5)])
    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", unk_token="[UNK]").save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def trained_dirs(tmp_path_factory, sample_dir) -> dict[str, Path]:
    """The training stage's two kinds, vocabulary 300, trained on one sample shard."""
    root = tmp_path_factory.mktemp("trained")
    folders = {}
    for kind in ("neox", "nanochat"):
        folders[kind] = root / kind
        train_tokenizer(
            TokenizerSpec.from_schema(name=f"t_{kind}", kind=kind, vocab_size=300),
            [sample_dir / "shard_00000.parquet"],
            folders[kind],
        )
    return folders


def write_jsonl(path: Path, texts: list) -> Path:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


def result(name: str, **metrics) -> dict:
    """A per-tokenizer result as evaluate_tokenizer writes it, with the given pooled metrics."""
    return {
        "name": name,
        "kind": "reference",
        "path": name,
        "vocab_size": 100,
        "metrics": metrics,
        "totals": {"texts": 1, "tokens": 1, "bytes": 1, "distinct_ids": 1},
        "datasets": [
            {
                "name": "d",
                "metrics": metrics,
                "totals": {"texts": 1, "tokens": 1, "bytes": 1, "distinct_ids": 1, "empty_texts": 0},
            }
        ],
    }


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_by_hand_on_tiny_texts(tmp_path, tiny_dir):
    """GerTokEval's definitions, worked out by hand for a word-level tokenizer that adds <s>."""
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tiny_dir).encode("a\nc c") == [5, 1, 3, 3]  # special token included
    one = write_jsonl(tmp_path / "one.jsonl", ["a b", "a\nc c", ""])
    two = write_jsonl(tmp_path / "two.jsonl", ["ä"])  # unknown word: [UNK]; 2 bytes, 1 character
    out = tmp_path / "tiny.json"
    evaluate_tokenizer(
        TokenizerSource(name="tiny", path=str(tiny_dir), kind="trained"),
        [EvalDataset("one", (str(one),)), EvalDataset("two", (str(two),))],
        out,
        batch_size=2,
    )
    got = json.loads(out.read_text())
    # Non-empty texts: "a b" -> <s> a b (3 tokens, 3 bytes, 3 chars, 1 line); "a\nc c" -> <s> a c c
    # (4 tokens, 5 bytes, 5 chars, 2 lines); "ä" -> <s> [UNK] (2 tokens, 2 bytes, 1 char, 1 line).
    # Ids used: 5, 1, 2, 3, 0 of a vocabulary of 6.
    F = Fraction
    expected = {
        "fertility": (F(3, 3) + F(4, 5) + F(2, 2)) / 3,
        "token_length": (F(3, 3) + F(5, 4) + F(1, 2)) / 3,
        "tokens_per_line": (F(3, 1) + F(4, 2) + F(2, 1)) / 3,
        "vocab_utilization": F(5, 6),
        "type_token_ratio": F(5, 9),
        "bytes_per_token": F(10, 9),
    }
    assert got["vocab_size"] == 6
    for key, value in expected.items():
        assert got["metrics"][key] == pytest.approx(float(value), rel=1e-12), key
    assert got["totals"] == {
        "texts": 3,
        "zero_token_texts": 0,
        "tokens": 9,
        "bytes": 10,
        "characters": 9,
        "lines": 4,
        "distinct_ids": 5,
        "empty_texts": 1,
        "whitespace_texts_skipped": 0,
    }
    first, second = got["datasets"]
    assert [first["name"], second["name"]] == ["one", "two"]
    assert first["metrics"]["fertility"] == pytest.approx(float((F(1) + F(4, 5)) / 2))
    assert first["metrics"]["vocab_utilization"] == pytest.approx(4 / 6)
    assert first["metrics"]["type_token_ratio"] == pytest.approx(4 / 7)
    assert first["totals"]["empty_texts"] == 1
    assert second["metrics"]["token_length"] == pytest.approx(0.5)
    assert second["metrics"]["type_token_ratio"] == pytest.approx(1.0)
    assert got["encoder"] == "tokenizers.Tokenizer.encode_batch_fast"


def test_samples_caps_the_records_read(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", ["a", "", "a b", "c c c"])  # the cap counts the empty record too
    stats, empty, _ = evaluate_texts(
        [EvalDataset("d", (str(data),), samples=3)],
        one_at_a_time_encoder(load_tokenizer(TokenizerSource("t", str(tiny_dir)))),
        batch_size=BATCH,
    )
    assert (stats["d"].texts, empty["d"], stats["d"].tokens) == (2, 1, 2 + 3)


def test_whitespace_only_texts_are_skipped_as_gertokeval_does(tmp_path, tiny_dir):
    """GerTokEval skips a text when ``not text.strip()``: whitespace-only texts change no metric and are counted."""
    clean = write_jsonl(tmp_path / "clean.jsonl", ["a b", "a\nc c"])
    blank = write_jsonl(tmp_path / "blank.jsonl", ["a b", " ", "\n\t \n", "a\nc c", ""])
    out_clean, out_blank = tmp_path / "clean.json", tmp_path / "blank.json"
    source = TokenizerSource("tiny", str(tiny_dir))
    evaluate_tokenizer(source, [EvalDataset("d", (str(clean),))], out_clean, batch_size=BATCH)
    evaluate_tokenizer(source, [EvalDataset("d", (str(blank),))], out_blank, batch_size=BATCH)
    clean_result, blank_result = (json.loads(path.read_text()) for path in (out_clean, out_blank))
    assert blank_result["metrics"] == clean_result["metrics"]
    assert blank_result["totals"]["whitespace_texts_skipped"] == 2
    assert blank_result["datasets"][0]["totals"]["whitespace_texts_skipped"] == 2
    assert blank_result["totals"]["empty_texts"] == 1  # the "" text alone
    assert blank_result["totals"]["texts"] == clean_result["totals"]["texts"] == 2
    assert clean_result["totals"]["whitespace_texts_skipped"] == 0


@pytest.mark.parametrize("kind", ["neox", "nanochat"])
def test_batch_and_one_at_a_time_give_identical_metrics(trained_dirs, sample_dir, kind):
    tokenizer = load_tokenizer(TokenizerSource("t", str(trained_dirs[kind]), kind="trained"))
    datasets = [
        EvalDataset("validation", (str(sample_dir / "shard_00004.parquet"),)),
        EvalDataset("more", (str(sample_dir / "shard_00001.parquet"),), samples=6),
    ]
    encoders = batch_encoders(tokenizer, trained_folder=trained_dirs[kind], threads=2)
    expected = {
        "neox": ["tokenizers.Tokenizer.encode_batch_fast", "transformers batch call"],
        "nanochat": ["tiktoken.Encoding.encode_batch", "tokenizers.Tokenizer.encode_batch_fast", "transformers batch call"],
    }[kind]
    assert [name for name, _ in encoders] == expected
    single, single_empty, _ = evaluate_texts(datasets, one_at_a_time_encoder(tokenizer), batch_size=1000)
    assert single["more"].texts == 6
    for name, encode in encoders:
        batched, batched_empty, _ = evaluate_texts(datasets, encode, batch_size=4)
        assert batched_empty == single_empty, name
        for dataset in ("validation", "more"):
            assert batched[dataset].totals() == single[dataset].totals(), name
            assert batched[dataset].metrics(300) == single[dataset].metrics(300), name  # exactly, not approximately
            assert batched[dataset].tokens > batched[dataset].texts  # something was encoded


@pytest.mark.eltec
@pytest.mark.parametrize("kind", ["neox", "nanochat"])
def test_batch_and_one_at_a_time_agree_on_real_german_text(trained_dirs, eltec_dir, kind):
    """ELTeC's validation novels (19th-century spelling, long paragraphs): identical metrics."""
    tokenizer = load_tokenizer(TokenizerSource("t", str(trained_dirs[kind]), kind="trained"))
    datasets = [EvalDataset("eltec", (str(eltec_dir / "shard_00005.parquet"),), samples=120)]
    name, encode = batch_encoders(tokenizer, trained_folder=trained_dirs[kind], threads=2)[0]
    batched, _, _ = evaluate_texts(datasets, encode, batch_size=50)
    single, _, _ = evaluate_texts(datasets, one_at_a_time_encoder(tokenizer), batch_size=BATCH)
    assert batched["eltec"].texts == 120 and batched["eltec"].bytes > 400_000
    assert batched["eltec"].totals() == single["eltec"].totals()
    assert batched["eltec"].metrics(300) == single["eltec"].metrics(300)


def test_special_token_text_and_bos_agree_between_tiktoken_and_encode(trained_dirs):
    tokenizer = load_tokenizer(TokenizerSource("t", str(trained_dirs["nanochat"]), kind="trained"))
    name, encode = batch_encoders(tokenizer, trained_folder=trained_dirs["nanochat"])[0]
    texts = ["Grüße<|bos|>aus Köln", "  zwei  Leerzeichen\n\n", "Zahlen 12345 und Emoji 🙂"]
    assert name == "tiktoken.Encoding.encode_batch"
    assert encode(texts) == [tokenizer.encode(text) for text in texts]
    bos = tokenizer.convert_tokens_to_ids("<|bos|>")
    assert encode(texts)[0][0] == bos and encode(texts)[0].count(bos) == 2  # added BOS + the one in the text


def test_unreadable_tokenizer_pkl_falls_back_to_the_export(trained_dirs, tmp_path, caplog):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(trained_dirs["nanochat"], folder)
    (folder / "tokenizer.pkl").write_bytes(b"not a pickle")
    tokenizer = load_tokenizer(TokenizerSource("t", str(folder), kind="trained"))
    names = [name for name, _ in batch_encoders(tokenizer, trained_folder=folder)]
    assert names == ["tokenizers.Tokenizer.encode_batch_fast", "transformers batch call"]
    assert "cannot use tokenizer.pkl" in caplog.text


def test_batch_encoder_falls_back_when_the_fast_path_differs(tiny_dir):
    """A tokenizer whose encode() does more than its Rust backend is encoded with its own batch call."""
    from transformers import AutoTokenizer

    class Lowercasing:
        def __init__(self):
            self.inner = AutoTokenizer.from_pretrained(tiny_dir)
            self._tokenizer = self.inner._tokenizer

        def encode(self, text):
            return self.inner.encode(text.lower())

        def __call__(self, texts, **options):
            return self.inner([text.lower() for text in texts], **options)

    tokenizer = Lowercasing()
    name, encode = checked_encoder(tokenizer, batch_encoders(tokenizer), ["A b", "c"], "tokenizer 'x'")
    assert name == "transformers batch call"
    assert encode(["A B"]) == [[5, 1, 2]]
    with pytest.raises(TokenizerEvalError, match="no batch encoder gives the ids of encode"):
        checked_encoder(tokenizer, batch_encoders(tokenizer)[:1], ["A b"], "tokenizer 'x'")


def test_truncation_on_the_backend_uses_the_transformers_batch_call(tiny_dir):
    tokenizer = load_tokenizer(TokenizerSource("t", str(tiny_dir)))
    tokenizer._tokenizer.enable_truncation(max_length=2)
    [(name, encode)] = batch_encoders(tokenizer)
    assert name == "transformers batch call"
    assert encode(["a b c d"]) == [tokenizer.encode("a b c d")] == [[5, 1, 2, 3, 4]]


# --- reading texts -----------------------------------------------------------------------------


def test_read_text_batches_formats_and_cap(tmp_path):
    pq.write_table(pa.table({"body": ["p1", None, "p3"]}), tmp_path / "a.parquet")
    write_jsonl(tmp_path / "b.jsonl", ["j1", "j2\nzweite Zeile"])
    (tmp_path / "c.txt").write_text("t1\r\n\nt3\n", encoding="utf-8")
    assert list(read_text_batches([tmp_path / "a.parquet"], text_field="body", batch_size=2)) == [["p1", ""], ["p3"]]
    assert [text for batch in read_text_batches([tmp_path / "c.txt"]) for text in batch] == ["t1", "", "t3"]
    files = [tmp_path / "b.jsonl", tmp_path / "c.txt"]
    assert [text for batch in read_text_batches(files, limit=3) for text in batch] == ["j1", "j2\nzweite Zeile", "t1"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("x.parquet", None, "no 'text' column (columns: body); set text_field"),
        ("x.jsonl", '{"text": "ok"}\n{"body": "no"}\n', "x.jsonl:2: expected a JSON object with the key 'text'"),
        ("x.jsonl", '{"text": 5}\n', "x.jsonl:1: 'text' is a int; expected a string"),
        ("x.jsonl", "{oops\n", "x.jsonl:1: not valid JSON"),
        ("x.txt", b"gut\n\xff\n", "x.txt:2: not valid UTF-8"),
        ("x.csv", "text\n", "cannot read texts from a .csv file"),
    ],
)
def test_bad_text_files_give_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        pq.write_table(pa.table({"body": ["x"]}), path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerEvalError) as caught:
        list(read_text_batches([path]))
    assert message in str(caught.value) and "\n" not in str(caught.value)


# --- tables and plots --------------------------------------------------------------------------


def test_markdown_table_formats_and_bolds_like_the_seed():
    results = [
        result(
            "german_gpt2",
            fertility=0.2121,
            vocab_utilization=0.93349,
            type_token_ratio=0.00671,
            token_length=4.944,
            tokens_per_line=28.14,
            bytes_per_token=4.7,
        ),
        result(
            "nano_neox",
            fertility=0.20412,
            vocab_utilization=0.92449,
            type_token_ratio=0.009012,
            token_length=5.1512,
            tokens_per_line=26.93,
            bytes_per_token=4.9,
        ),
        result(
            "teuken",
            fertility=0.2519,
            vocab_utilization=0.19,
            type_token_ratio=0.0056,
            token_length=4.17,
            tokens_per_line=34.06,
            bytes_per_token=3.9,
        ),
    ]
    assert markdown_table(results) == (
        "| Tokenizer | Fertility | Vocab Utilization | Type-Token Ratio | Token Length | Tokens per Line |\n"
        "|---|---|---|---|---|---|\n"
        "| german_gpt2 | 0.212 | **93.3%** | 0.0067 | 4.94 | 28.1 |\n"
        "| nano_neox | **0.204** | 92.4% | **0.0090** | **5.15** | 26.9 |\n"
        "| teuken | 0.252 | 19.0% | 0.0056 | 4.17 | **34.1** |\n"
    )
    latex = latex_table(results)
    assert r"nano\_neox & \textbf{0.204} & 92.4\% & \textbf{0.0090} & \textbf{5.15} & 26.9 \\" in latex
    assert r"\toprule" in latex and r"\begin{tabular}{lrrrrr}" in latex


def test_ties_on_the_printed_value_are_all_bold_and_missing_values_print_dashes():
    results = [result("a", fertility=0.2041, type_token_ratio=None), result("b", fertility=0.2044, type_token_ratio=0.5)]
    rows = markdown_table(results).splitlines()[2:]
    assert rows[0].startswith("| a | **0.204** |") and rows[1].startswith("| b | **0.204** |")
    assert "| --- |" in rows[0] and "**0.5000**" in rows[1]
    assert format_metric("vocab_utilization", 0.9245) == "92.5%"


def test_summary_writes_tables_and_plots(tmp_path):
    results = [
        result(
            "ref_one",
            fertility=0.25,
            vocab_utilization=0.5,
            type_token_ratio=0.01,
            token_length=4.0,
            tokens_per_line=20.0,
            bytes_per_token=4.0,
        ),
        result(
            "trained_two",
            fertility=0.2,
            vocab_utilization=0.75,
            type_token_ratio=0.02,
            token_length=5.0,
            tokens_per_line=25.0,
            bytes_per_token=5.0,
        ),
    ]
    paths = []
    for item in results:
        paths.append(tmp_path / f"{item['name']}.json")
        paths[-1].write_text(json.dumps(item))
    out = tmp_path / "summary"
    summarize(
        paths,
        markdown=out / "t.md",
        csv=out / "t.csv",
        per_dataset_csv=out / "d.csv",
        latex=out / "t.tex",
        plots_dir=out / "plots",
    )
    markdown = (out / "t.md").read_text()
    assert "| trained_two | **0.200** | **75.0%** | **0.0200** | **5.00** | **25.0** |" in markdown
    assert "## Fertility per dataset" in markdown
    import pandas as pd

    table = pd.read_csv(out / "t.csv")
    assert list(table["tokenizer"]) == ["ref_one", "trained_two"]
    assert table.loc[1, "fertility"] == 0.2 and table.loc[0, "bytes_per_token"] == 4.0
    assert list(pd.read_csv(out / "d.csv")["dataset"]) == ["d", "d"]
    assert r"\textbf{0.200}" in (out / "t.tex").read_text()
    for name in (
        "fertility",
        "vocab_utilization",
        "type_token_ratio",
        "token_length",
        "tokens_per_line",
        "bytes_per_token",
        "per_dataset",
    ):
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert "<svg" in (out / "plots" / f"{name}.svg").read_text()
    again = tmp_path / "again"
    plot_metric(results, "fertility", again)
    assert (again / "fertility.svg").read_bytes() == (out / "plots" / "fertility.svg").read_bytes()  # reproducible


# --- reference tokenizers ----------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A loopback Hub stand-in that huggingface_hub (and so transformers) talks to, with an empty cache."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with HubStandIn(tmp_path / "hub") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        monkeypatch.setattr(
            huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        yield server


@pytest.mark.network
def test_reference_tokenizer_from_the_hub_by_id(hub, trained_dirs, sample_dir, tmp_path):
    import shutil

    repo = hub.root / "models" / "owner" / "tokenizer"
    shutil.copytree(trained_dirs["neox"], repo)
    out = tmp_path / "ref.json"
    got = evaluate_tokenizer(
        TokenizerSource("ref", "owner/tokenizer"),
        [EvalDataset("validation", (str(sample_dir / "shard_00004.parquet"),))],
        out,
        batch_size=BATCH,
    )
    assert got["commit"] == hub.commit_of(repo)
    assert got["revision"] == "main" and json.loads(out.read_text())["vocab_size"] == 300
    assert any(path.endswith("/tokenizer.json") for _, path in hub.requests)


@pytest.mark.network
def test_unreachable_reference_tokenizer_names_it(hub, tmp_path, sample_dir, monkeypatch):
    out = tmp_path / "missing.json"
    with pytest.raises(TokenizerEvalError) as caught:
        evaluate_tokenizer(
            TokenizerSource("german_gpt2", "dbmdz/german-gpt2"),
            [EvalDataset("validation", (str(sample_dir / "shard_00004.parquet"),))],
            out,
            batch_size=BATCH,
        )
    message = str(caught.value)
    assert message.startswith("reference tokenizer 'german_gpt2' (dbmdz/german-gpt2@main): cannot load it")
    assert "HF_ENDPOINT" in message and "\n" not in message
    assert not out.exists()
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network at all
    with pytest.raises(TokenizerEvalError, match=r"reference tokenizer 'teuken' \(openGPT-X/Teuken-7B-instruct-v0.6@v1\)"):
        load_tokenizer(TokenizerSource("teuken", "openGPT-X/Teuken-7B-instruct-v0.6", revision="v1"))


def test_reference_that_is_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(TokenizerEvalError, match=r"'no/such/folder' is not a folder and not a Hub repo id"):
        load_tokenizer(TokenizerSource("local", "no/such/folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerEvalError, match=r"reference tokenizer 'empty' \(.*empty\): cannot load it .*the folder needs"):
        load_tokenizer(TokenizerSource("empty", str(tmp_path / "empty")))


# --- Hub datasets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files, split, expected",
    [
        (
            [
                "data/train-00000-of-00002.parquet",
                "data/train-00001-of-00002.parquet",
                "data/test-00000-of-00001.parquet",
                "README.md",
            ],
            "train",
            ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"],
        ),
        (["train.jsonl", "validation.jsonl", "training_notes.jsonl"], "validation", ["validation.jsonl"]),
        (["default/train/0000.parquet", "default/test/0000.parquet"], "train", ["default/train/0000.parquet"]),
        (["texts.jsonl", "more/texts2.parquet"], "train", ["more/texts2.parquet", "texts.jsonl"]),  # no split named: all train
        (["texts.jsonl"], "test", []),
    ],
)
def test_hub_split_files(files, split, expected):
    assert hub_split_files(files, split) == expected


@pytest.mark.network
def test_fetch_hub_dataset_takes_the_first_samples(hub, tmp_path):
    repo = hub.root / "datasets" / "bench" / "germeval"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.table({"sentence": ["eins", "", "drei"]}), repo / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"sentence": ["vier", "fünf"]}), repo / "data" / "train-00001-of-00002.parquet")
    pq.write_table(pa.table({"sentence": ["test"]}), repo / "data" / "test-00000-of-00001.parquet")
    spec = HubDataset(name="germeval", repo="bench/germeval", split="train", text_field="sentence", samples=4)
    manifest = fetch_hub_dataset(spec, tmp_path / "g.parquet", tmp_path / "g.json", retries=0)
    assert pq.read_table(tmp_path / "g.parquet").column("text").to_pylist() == ["eins", "", "drei", "vier"]
    assert manifest["source"]["commit"] == hub.commit_of(repo)
    assert (manifest["rows"], manifest["empty_texts"]) == (4, 1)
    assert json.loads((tmp_path / "g.json").read_text())["files"] == [
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
    ]
    one = fetch_hub_dataset(
        HubDataset("g", "bench/germeval", text_field="sentence", samples=2),
        tmp_path / "h.parquet",
        tmp_path / "h.json",
        retries=0,
    )
    assert one["files"] == ["data/train-00000-of-00002.parquet"]  # stops downloading once it has enough

    with pytest.raises(TokenizerEvalError, match=r"no .parquet/.jsonl files for split 'dev' \(data files: data/test"):
        fetch_hub_dataset(HubDataset("g", "bench/germeval", split="dev"), tmp_path / "x.parquet", tmp_path / "x.json")
    with pytest.raises(TokenizerEvalError, match=r"dataset repo 'bench/nope' not found on the Hub"):
        fetch_hub_dataset(HubDataset("n", "bench/nope"), tmp_path / "y.parquet", tmp_path / "y.json", retries=0)
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "y.parquet").exists()


# --- config ------------------------------------------------------------------------------------


def with_eval(section: dict, **top) -> dict:
    config = default_config()
    config["tokenizer_eval"] = section
    config.update(top)
    return config


@pytest.mark.parametrize(
    "section, message",
    [
        (
            {"datasets": [{"name": "v", "shards": "validation"}, {"name": "v", "path": "x.txt"}]},
            "tokenizer_eval.datasets[1].name 'v' is used twice",
        ),
        (
            {"datasets": [{"name": "v", "shards": "heldout"}]},
            "tokenizer_eval.datasets[0].shards is 'heldout'; expected the name of a shard set in corpus.shard_sets (train, validation)",
        ),
        (
            {"trained": ["sample_neox", "nope"]},
            "tokenizer_eval.trained[1] is 'nope'; expected the name of an entry of tokenizers (sample_nanochat, sample_neox)",
        ),
        (
            {"references": [{"name": "sample_neox", "path": "a/b"}]},
            "tokenizer_eval.references[0].name 'sample_neox' is also a trained tokenizer's name",
        ),
        (
            {"references": [{"name": "r", "path": "a/b"}, {"name": "r", "path": "c/d"}]},
            "tokenizer_eval.references[1].name 'r' is used twice",
        ),
    ],
)
def test_config_cross_references(section, message):
    with pytest.raises(ConfigError) as caught:
        validate_config(with_eval(section))
    assert message in str(caught.value)


def test_config_defaults_and_a_reference_may_reuse_an_unevaluated_name():
    config = validate_config(
        with_eval(
            {"datasets": [{"name": "v", "hub": "a/b"}], "trained": False, "references": [{"name": "sample_neox", "path": "a/b"}]}
        )
    )
    section = config["tokenizer_eval"]
    assert section["batch_size"] == 1000
    assert section["datasets"][0] == {
        "name": "v",
        "hub": "a/b",
        "revision": "main",
        "split": "train",
        "text_field": "text",
        "samples": None,
    }
    assert section["references"][0]["trust_remote_code"] is False
    bare = default_config()
    bare.pop("tokenizer_eval", None)
    assert validate_config(bare)["tokenizer_eval"] == {"datasets": [], "trained": True, "references": [], "batch_size": 1000}


# --- the workflow ------------------------------------------------------------------------------


@pytest.mark.slow
def test_workflow_evaluates_trained_and_local_reference_tokenizers(tmp_path, base_config, snakemake_run, tiny_dir):
    texts = write_jsonl(tmp_path / "extra.jsonl", ["Guten Morgen!", "", "Zweite\nZeile"])
    base_config["corpus"]["shard_sets"]["small"] = 0  # train on one shard: fewer jobs
    for entry in base_config["tokenizers"]:
        entry["shards"] = "small"
    base_config["tokenizer_eval"] = {
        "datasets": [{"name": "validation", "shards": "validation"}, {"name": "extra", "path": str(texts)}],
        "trained": ["sample_neox"],
        "references": [{"name": "tiny", "path": str(tiny_dir)}],
    }
    target = "results/tokenizer_eval/summary/tokenizer_eval.md"
    run = snakemake_run(tmp_path / "work", base_config, target)
    assert run.returncode == 0, run.stderr[-3000:]
    results = tmp_path / "work" / "results" / "tokenizer_eval"
    markdown = (results / "summary" / "tokenizer_eval.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| tiny") or line.startswith("| sample_neox")]
    assert [row.split(" | ")[0] for row in rows[:2]] == ["| tiny", "| sample_neox"]  # references first
    neox = json.loads((results / "sample_neox.json").read_text())
    assert [entry["name"] for entry in neox["datasets"]] == ["validation", "extra"]
    assert neox["datasets"][1]["totals"]["empty_texts"] == 1
    assert (results / "summary" / "plots" / "per_dataset.svg").is_file()
    assert not (results / "sample_nanochat.json").exists()  # not listed in trained
    again = snakemake_run(tmp_path / "work", base_config, target, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr

    base_config["tokenizer_eval"]["references"].append({"name": "broken", "path": str(tmp_path / "no-tokenizer-here")})
    (tmp_path / "no-tokenizer-here").mkdir()
    failed = snakemake_run(tmp_path / "work", base_config, target)
    assert failed.returncode != 0
    assert "reference tokenizer 'broken'" in failed.stderr and "cannot load it" in failed.stderr
    assert not (results / "broken.json").exists()
