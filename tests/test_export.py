"""Export stage: MaxText checkpoint → Hugging Face LlamaForCausalLM, checked by logits."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import tiny_model

from nanogerman.config import ConfigError, validate_config
from nanogerman.export import (
    checkpoint_items,
    conversion_command,
    export_run,
    fixed_hf_config,
    load_inputs,
    logits_command,
)
from nanogerman.export_check import ExportError, check_ids, compare_logits, verify_export
from nanogerman.schema import schema_defaults

REPO = Path(__file__).resolve().parents[1]
TINY_YML = str(REPO / "config" / "models" / "nano-german-tiny.yml")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny trained run and its export (tests/tiny_model.py; built once per session)."""
    return tiny_model(tmp_path_factory.getbasetemp())


# --- without MaxText: inputs, command lines, config.json -------------------------------------------


def fake_run(tmp_path: Path, *, args: list[str] | None = None, steps: tuple[int, ...] = (0, 29)) -> tuple[Path, Path]:
    """A train.json like the training stage writes, a checkpoint folder per step and a tokenizer folder."""
    checkpoints = tmp_path / "checkpoints" / "tiny-0123abcd" / "checkpoints"
    for step in steps:
        (checkpoints / str(step) / "items").mkdir(parents=True)
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}")
    (tokenizer / "tokenizer_config.json").write_text("{}")
    (tokenizer / "stats.json").write_text(
        json.dumps({"vocab_size": 500, "bos_token_id": 491, "eos_token_id": 491, "pad_token_id": 491})
    )
    maxtext_args = args or [
        TINY_YML,
        "run_name=tiny-0123abcd",
        f"base_output_directory={tmp_path / 'checkpoints'}",
        "dataset_type=tfds",
        "dataset_path=/data/tfds",
        "dataset_name=german_maxtext_nano_data:1.0.0",
        "tokenizer_type=huggingface",
        f"tokenizer_path={tokenizer}",
        "vocab_size=512",
        "steps=30",
        "learning_rate=0.003",
        "per_device_batch_size=2",
        "max_target_length=128",
        "packing=true",
        "dtype=bfloat16",
        "enable_checkpointing=true",
        "hardware=cpu",
        "skip_jax_distributed_system=true",
        "metrics_file=/x/metrics.jsonl",
        "base_emb_dim=64",
        "head_dim=16",
    ]
    manifest = {
        "run": "tiny",
        "maxtext_args": maxtext_args,
        "vocab_size": 512,
        "max_target_length": 128,
        "checkpoint_dir": str(checkpoints),
        "checkpoint_step": steps[-1],
        "final_step": steps[-1],
        "checkpoint_uri": f"{checkpoints}/{steps[-1]}/items",
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(manifest))
    return path, tokenizer


def as_pairs(command: list[str]) -> dict[str, str]:
    return dict(argument.split("=", 1) for argument in command if "=" in argument and not argument.startswith("--"))


def test_converter_gets_the_run_model_under_the_llama_mapping(tmp_path):
    manifest, tokenizer = fake_run(tmp_path)
    inputs = load_inputs(manifest, tokenizer)
    command = conversion_command(inputs, tmp_path / "out", python="python3")
    assert command[:4] == ["python3", "-m", "maxtext.checkpoint_conversion.to_huggingface", TINY_YML]
    pairs = as_pairs(command)
    # llama3.1-8b's own YAML would override the model file; command-line keys win with override_model_config
    assert pairs["model_name"] == "llama3.1-8b" and pairs["override_model_config"] == "true"
    assert pairs["base_emb_dim"] == "64" and pairs["head_dim"] == "16"  # the run's extras over the model file
    assert pairs["base_num_decoder_layers"] == "2" and pairs["mlp_activations"] == '["silu","linear"]'
    assert pairs["rope_type"] == "llama3.1" and pairs["rope_use_scale"] == "false" and pairs["rope_max_timescale"] == "10000"
    assert pairs["vocab_size"] == "512" and pairs["weight_dtype"] == "float32" and pairs["scan_layers"] == "true"
    assert pairs["load_parameters_path"] == f"{tmp_path}/checkpoints/tiny-0123abcd/checkpoints/29/items"
    assert pairs["base_output_directory"] == str(tmp_path / "out")
    for dropped in ("dataset_type", "dataset_path", "learning_rate", "steps", "metrics_file", "tokenizer_path", "dtype"):
        assert dropped not in pairs
    assert "--override_model_architecture" in command and f"--hf_model_path={tokenizer.resolve()}" in command


def test_paths_reach_maxtext_intact_through_its_config_parser(tmp_path):
    """A results folder with ' #' (a YAML comment) and ': ' (a mapping) reaches both MaxText children unchanged."""
    from nanogerman.maxtext_values import parsed_back

    odd = tmp_path / "res #1: x"
    manifest, tokenizer = fake_run(odd)
    inputs = load_inputs(manifest, tokenizer)
    for command, folder in (
        (conversion_command(inputs, odd / "hf" / ".tiny.tmp-1", python="python3"), odd / "hf" / ".tiny.tmp-1"),
        (logits_command(inputs, "ids.npy", "logits.npy", batch=3, length=64, scratch=odd / "s", python="python3"), odd / "s"),
    ):
        arguments = [argument for argument in command if "=" in argument and not argument.startswith("--")]
        assert parsed_back(next(a for a in arguments if a.startswith("load_parameters_path="))) == inputs.checkpoint
        assert parsed_back(next(a for a in arguments if a.startswith("base_output_directory="))) == str(folder)


def test_maxtext_forward_uses_the_run_model_in_float32(tmp_path):
    manifest, tokenizer = fake_run(tmp_path)
    inputs = load_inputs(manifest, tokenizer)
    command = logits_command(inputs, "ids.npy", "logits.npy", batch=3, length=64, scratch=tmp_path / "s", python="python3")
    assert command[:6] == ["python3", "-m", "nanogerman.maxtext_logits", "ids.npy", "logits.npy", TINY_YML]
    pairs = as_pairs(command)
    assert "model_name" not in pairs  # the model as trained, not the converter's llama3.1-8b
    assert pairs["dtype"] == "float32" and pairs["weight_dtype"] == "float32" and pairs["matmul_precision"] == "highest"
    assert pairs["per_device_batch_size"] == "3" and pairs["max_target_length"] == "64" and pairs["base_emb_dim"] == "64"


def test_a_chosen_step_and_a_missing_checkpoint(tmp_path):
    manifest, tokenizer = fake_run(tmp_path)
    assert load_inputs(manifest, tokenizer, step=0).checkpoint.endswith("/checkpoints/0/items")
    with pytest.raises(ExportError) as error:
        load_inputs(manifest, tokenizer, step=7)
    message = str(error.value)
    assert "\n" not in message and "checkpoints/7/items not found" in message and "steps found: 0, 29" in message
    shutil.rmtree(tmp_path / "checkpoints")
    with pytest.raises(ExportError, match=r"run tiny: checkpoint .*/29/items not found; .* holds no checkpoints"):
        load_inputs(manifest, tokenizer)
    assert checkpoint_items({"checkpoint_dir": "gs://b/run/checkpoints", "checkpoint_uri": "x", "checkpoint_step": 1}, 5) == (
        "gs://b/run/checkpoints/5/items",
        5,
    )


def test_bad_manifests_and_models_are_one_line(tmp_path):
    with pytest.raises(ExportError, match="unreadable training manifest"):
        load_inputs(tmp_path / "absent.json", tmp_path)
    (tmp_path / "partial.json").write_text(json.dumps({"run": "x", "maxtext_args": []}))
    with pytest.raises(ExportError, match="has no 'checkpoint_uri'"):
        load_inputs(tmp_path / "partial.json", tmp_path)
    manifest, tokenizer = fake_run(tmp_path / "default_rope", args=None)
    data = json.loads(manifest.read_text())
    data["maxtext_args"] = [*data["maxtext_args"], "rope_type=default"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(ExportError, match="rope_type 'default'.*set rope_type 'llama3.1' and rope_use_scale false"):
        load_inputs(manifest, tokenizer)
    data["maxtext_args"][-1] = "decoder_block=gemma2"
    manifest.write_text(json.dumps(data))
    with pytest.raises(ExportError, match="decoder_block is 'gemma2'"):
        load_inputs(manifest, tokenizer)


def test_config_json_gets_the_tokenizer_ids_and_plain_rope(tmp_path):
    manifest, tokenizer = fake_run(tmp_path)
    inputs = load_inputs(manifest, tokenizer)
    converted = {
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "pad_token_id": None,
        "max_position_embeddings": 131072,
        "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0},
        "vocab_size": 512,
    }
    fixed = fixed_hf_config(converted, inputs)
    assert (fixed["bos_token_id"], fixed["eos_token_id"], fixed["pad_token_id"]) == (491, 491, 491)
    assert fixed["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}
    assert fixed["max_position_embeddings"] == 128 and fixed["vocab_size"] == 512 and fixed["tie_word_embeddings"] is False


def test_logit_comparison_figures():
    import numpy as np

    reference = np.zeros((1, 2, 3), dtype=np.float32)
    assert compare_logits(reference, reference + 1e-4)["max_abs_diff"] == pytest.approx(1e-4, rel=1e-3)
    assert compare_logits(reference, np.zeros((1, 2, 4)))["max_abs_diff"] == float("inf")
    assert compare_logits(reference, reference * np.nan)["max_abs_diff"] == float("inf")


def test_export_settings_are_checked_before_any_job(base_config):
    config = dict(base_config, export={"runs": ["tiny_nanochat", "nope"]})
    with pytest.raises(ConfigError, match=r"^config error: export.runs\[1\] is 'nope'; expected the name of a training run"):
        validate_config(config)
    config = dict(base_config, export={"publish": {"tiny_neox": "not a repo id"}})
    with pytest.raises(ConfigError, match=r"export.publish.tiny_neox is 'not a repo id'; expected a Hub model repo id"):
        validate_config(config)
    config = dict(base_config, export={"runs": ["tiny_neox"], "checkpoint_step": {"tiny_nanochat": 100}})
    with pytest.raises(ConfigError, match="export.checkpoint_step names 'tiny_nanochat', which is not an exported run"):
        validate_config(config)


# --- with MaxText: the tiny trained run -------------------------------------------------------------


@pytest.mark.slow
def test_tiny_export_passes_the_logits_check_and_loads_offline(tiny):
    report = json.loads((tiny.export_dir / "logits_check.json").read_text())
    check = report["logits_check"]
    assert check["passed"] and check["max_abs_diff"] < 1e-3 and check["argmax_agreement"] == 1.0
    assert check["shape"] == [3, 64, 512] and report["checkpoint_step"] == tiny.manifest["checkpoint_step"] == 29
    names = {path.name for path in tiny.export_dir.iterdir()}
    assert names == {
        "config.json",
        "generation_config.json",
        "logits_check.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the tokenizer stage's files, byte for byte
        assert (tiny.export_dir / name).read_bytes() == (tiny.tokenizer_dir / name).read_bytes()
    assert stat.S_IMODE((tiny.export_dir / "model.safetensors").stat().st_mode) & 0o044 == 0o044  # not the converter's 0600
    stats = json.loads((tiny.tokenizer_dir / "stats.json").read_text())
    config = json.loads((tiny.export_dir / "config.json").read_text())
    generation = json.loads((tiny.export_dir / "generation_config.json").read_text())
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert config[key] == generation[key] == stats[key] == stats["special_tokens"]["<|bos|>"]
    assert config["architectures"] == ["LlamaForCausalLM"] and config["rope_parameters"] == {
        "rope_type": "default",
        "rope_theta": 10000.0,
    }
    assert (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
        config["intermediate_size"],
        config["vocab_size"],
        config["max_position_embeddings"],
    ) == (64, 2, 4, 2, 16, 128, 512, 128)
    # A fresh interpreter with the Hub switched off loads and runs it (AutoModelForCausalLM, AutoTokenizer).
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "ids = t('Die Stadt liegt am Fluss.', return_tensors='pt').input_ids\n"
        "assert ids[0, 0].item() == m.config.bos_token_id\n"
        "out = m.generate(ids, max_new_tokens=5, do_sample=False)\n"
        "print(type(m).__name__, out.shape[1] - ids.shape[1])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tiny.export_dir)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["LlamaForCausalLM", "5"]


def corrupt(folder: Path, name: str, change) -> None:
    """Rewrite one tensor of model.safetensors with ``change`` applied."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors[name] = change(tensors[name].clone()).contiguous()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.slow
def test_a_corrupted_weight_fails_the_check(tiny, tmp_path):
    import numpy as np

    reference = np.load(tiny.maxtext_logits)
    ids = np.asarray(tiny.export_report["logits_check"]["token_ids"])
    assert verify_export(tiny.export_dir, reference, ids)["passed"]
    # The two halves of one head's key rows swapped: what a rotary-layout mistake looks like.
    broken = tmp_path / "broken"
    shutil.copytree(tiny.export_dir, broken)
    corrupt(
        broken,
        "model.layers.0.self_attn.k_proj.weight",
        lambda w: w[list(range(8, 16)) + list(range(8)) + list(range(16, w.shape[0]))],
    )
    with pytest.raises(ExportError) as error:
        verify_export(broken, reference, ids, run="tiny")
    assert "\n" not in str(error.value) and "fails the logits check: max |logit difference|" in str(error.value)
    # A slight change of one norm weight is caught as well.
    slight = tmp_path / "slight"
    shutil.copytree(tiny.export_dir, slight)
    corrupt(slight, "model.norm.weight", lambda w: w * 1.01)
    with pytest.raises(ExportError, match="tolerance 0.001"):
        verify_export(slight, reference, ids)


@pytest.mark.slow
def test_a_failed_check_or_converter_leaves_no_export(tiny, tmp_path):
    """The whole job with MaxText's child replaced: a bad conversion fails and writes nothing."""
    import numpy as np

    broken = tmp_path / "converted"
    shutil.copytree(tiny.export_dir, broken)
    corrupt(broken, "model.layers.1.mlp.down_proj.weight", lambda w: -w)

    def runner(command, env):
        assert command[1:3] == ["-m", "nanogerman.maxtext_export"]
        pairs = as_pairs(command[command.index("--convert") :])
        for path in broken.iterdir():
            if path.name != "logits_check.json":
                shutil.copy(path, Path(pairs["base_output_directory"]) / path.name)
        np.save(command[4], np.load(tiny.maxtext_logits))
        return 0, ""

    out = tmp_path / "hf" / "tiny"
    with pytest.raises(ExportError, match="fails the logits check"):
        export_run(tiny.manifest_path, tiny.tokenizer_dir, out, runner=runner)
    assert not out.exists() and list(out.parent.iterdir()) == []
    for code, message in ((3, "MaxText's converter failed"), (4, "forward pass for the logits check failed")):
        with pytest.raises(ExportError, match=message + ": ValueError: no mapping"):
            export_run(
                tiny.manifest_path,
                tiny.tokenizer_dir,
                out,
                runner=lambda command, env, code=code: (code, "ValueError: no mapping"),
            )
        assert not out.exists() and list(out.parent.iterdir()) == []


def test_check_ids_start_with_bos_and_cover_the_vocabulary(tmp_path, sample_dir):
    from nanogerman.tokenizer_training import TokenizerSpec, train_tokenizer

    stats = train_tokenizer(
        TokenizerSpec.from_schema(name="t", kind="neox", vocab_size=300), [sample_dir / "shard_00000.parquet"], tmp_path / "tok"
    )
    ids = check_ids(tmp_path / "tok", 384, 32)
    assert ids.shape == (3, 32) and ids[0, 0] == ids[1, 0] == stats["bos_token_id"]
    assert ids[2].max() < 384 and (check_ids(tmp_path / "tok", 384, 32) == ids).all()


# --- publishing to a Hub stand-in -----------------------------------------------------------------


class UploadingHub:
    """tests/hub_stand_in.py's Hub plus the upload routes huggingface_hub's create_repo/create_commit use.

    ``POST /api/repos/create``, ``POST /api/models/<repo>/preupload/<revision>`` (every file
    'regular', so contents travel base64 in the commit) and ``POST /api/models/<repo>/commit/<revision>``
    (NDJSON); committed files land in the stand-in's folder, so its download routes serve them.
    """

    @staticmethod
    def start(root: Path):
        import base64
        import re
        from urllib.parse import urlparse

        from hub_stand_in import HubStandIn

        class Hub(HubStandIn):
            def __init__(self, folder):
                self.created: list[dict] = []
                self.commits: list[dict] = []
                super().__init__(folder)

            def _handler_class(self):
                base, hub = super()._handler_class(), self

                class Handler(base):
                    def _json(self, status, data):
                        body = json.dumps(data).encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)

                    def do_POST(self):
                        path = urlparse(self.path).path
                        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                        hub.requests.append(("POST", path))
                        if self.headers.get("Authorization") != "Bearer hf_stand_in_token":
                            return self._json(401, {"error": "Invalid credentials"})
                        if path == "/api/repos/create":
                            request = json.loads(body)
                            hub.created.append(request)
                            repo = f"{request['organization']}/{request['name']}"
                            (hub.root / "models" / repo).mkdir(parents=True, exist_ok=True)
                            return self._json(200, {"url": f"{hub.url}/{repo}", "name": repo})
                        match = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)$", path)
                        if not match:
                            return self._json(404, {"error": "not found"})
                        repo_folder = hub.root / "models" / match[1]
                        if match[2] == "preupload":
                            files = json.loads(body)["files"]
                            return self._json(
                                200,
                                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                            )
                        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                        for line in lines:
                            if line["key"] == "file":
                                (repo_folder / line["value"]["path"]).write_bytes(base64.b64decode(line["value"]["content"]))
                        hub.commits.append(
                            {
                                "repo": match[1],
                                "header": lines[0]["value"],
                                "files": [entry["value"]["path"] for entry in lines[1:]],
                            }
                        )
                        oid = hub.commit_of(repo_folder)
                        return self._json(200, {"commitUrl": f"{hub.url}/{match[1]}/commit/{oid}", "commitOid": oid})

                return Handler

        return Hub(root)


@pytest.mark.slow
@pytest.mark.network
def test_publish_uploads_the_export_to_a_hub_stand_in(tiny, tmp_path, sample_dir):
    """Upload through huggingface_hub's own code, then evaluate the uploaded model as a reference model from that Hub."""
    from huggingface_hub import hf_hub_download

    from nanogerman.export_publish import PublishError, publish_export

    with UploadingHub.start(tmp_path / "hub") as hub:
        receipt = publish_export(
            tiny.export_dir,
            "nanogerman/tiny",
            tmp_path / "tiny.published.json",
            private=schema_defaults("export")["private"],
            endpoint=hub.url,
            token="hf_stand_in_token",
        )
        assert hub.created == [{"name": "tiny", "organization": "nanogerman", "visibility": "private", "type": "model"}]
        assert sorted(hub.commits[0]["files"]) == receipt["files"] == sorted(path.name for path in tiny.export_dir.iterdir())
        uploaded = tmp_path / "hub" / "models" / "nanogerman" / "tiny"
        for path in tiny.export_dir.iterdir():
            assert (uploaded / path.name).read_bytes() == path.read_bytes()
        assert json.loads((tmp_path / "tiny.published.json").read_text())["commit"] == hub.commit_of(uploaded)
        # what was uploaded downloads again through the client's own routes
        config = hf_hub_download("nanogerman/tiny", "config.json", endpoint=hub.url, cache_dir=tmp_path / "cache", token=False)
        assert Path(config).read_bytes() == (tiny.export_dir / "config.json").read_bytes()
        with pytest.raises(PublishError, match=r"^publishing .* to nanogerman/other failed: HfHubHTTPError: .*401"):
            publish_export(
                tiny.export_dir, "nanogerman/other", tmp_path / "other.json", private=True, endpoint=hub.url, token="hf_wrong"
            )
        assert not (tmp_path / "other.json").exists()
        # The published model as a reference model: a Hub id that transformers downloads (through lm-eval's HFLM)
        # in a job process whose HF_ENDPOINT is the stand-in, as a Snakemake job would.
        code = (
            "import json, sys\n"
            "from nanogerman.evaluation import EvalSettings, ModelSpec, evaluate_bits_per_byte\n"
            "from nanogerman.tokenizer_training import iter_texts\n"
            "texts = list(iter_texts([sys.argv[1]]))[:2]\n"
            "spec = ModelSpec('published', 'nanogerman/tiny', 'reference', revision='main')\n"
            "hub = evaluate_bits_per_byte(spec, EvalSettings.from_schema(), texts, sys.argv[2])\n"
            "local = evaluate_bits_per_byte(ModelSpec('tiny', sys.argv[3]), EvalSettings.from_schema(), texts, sys.argv[4])\n"
            "print(json.dumps([hub['results']['heldout_bpb']['bits_per_byte,none'], local['results']['heldout_bpb']['bits_per_byte,none'],"
            " hub['config']['model_args']]))\n"
        )
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": "hf_stand_in_token"}
        env.pop("HF_HUB_OFFLINE", None)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                str(sample_dir / "shard_00004.parquet"),
                str(tmp_path / "published.json"),
                str(tiny.export_dir),
                str(tmp_path / "local.json"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        from_hub, from_folder, model_args = json.loads(result.stdout.strip().splitlines()[-1])
        assert from_hub == from_folder and model_args.startswith("pretrained=nanogerman/tiny,revision=main,")
        assert list((tmp_path / "hf_home").glob("hub/models--nanogerman--tiny/snapshots/*/model.safetensors"))


def test_an_interrupted_export_stops_its_child(tmp_path):
    """Snakemake stops a job with SIGTERM (KeyboardInterrupt in the job): the MaxText child may not outlive it."""
    import signal
    import threading
    import time as clock

    from nanogerman import export_children

    pid_file = tmp_path / "child.pid"
    sleeper = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]

    def interrupt_soon():
        deadline = clock.monotonic() + 30
        while clock.monotonic() < deadline and not (pid_file.is_file() and pid_file.read_text()):
            clock.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # a real signal: it interrupts the blocking read

    threading.Thread(target=interrupt_soon, daemon=True).start()
    started = clock.monotonic()
    with pytest.raises(KeyboardInterrupt):
        export_children.run_command(sleeper, dict(os.environ))
    assert clock.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not orphaned
        os.kill(int(pid_file.read_text()), 0)
