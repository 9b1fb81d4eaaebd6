"""A BERT encoder as an ONNX graph, built from its safetensors weights without PyTorch.

``bert_graph(model_dir)`` reads a Hugging Face BERT checkpoint (``config.json`` and
``model.safetensors``) and writes, with ``onnx``'s graph builder, the computation
``transformers.BertModel`` does in inference: word, position and token-type embeddings,
then per layer self-attention over the unmasked tokens and the feed-forward block with exact
(erf) GELU, each followed by a residual add and layer normalisation. The graph takes
``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, batch x tokens) and returns
``last_hidden_state`` (float32, batch x tokens x hidden), as the torch export of the same
model did; pooling stays with the caller, which knows which tokens are padding.

The build is deterministic: the same checkpoint gives the same bytes (no time stamp, names
from each value's place in the model, nodes and initializers in the order they are made).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

# Opset 17 is the first with LayerNormalization; IR version 8 is the one it came with.
OPSET = 17
IR_VERSION = 8
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"


class UnsupportedModelError(ValueError):
    """The checkpoint is not a BERT encoder this builder writes."""


def bert_graph(model_dir: str | Path) -> onnx.ModelProto:
    """The ONNX graph of the BERT encoder in ``model_dir`` (see the module docstring).

    Raises ``UnsupportedModelError`` naming the setting when ``config.json`` describes
    anything but a BERT with absolute positions and GELU, ``OSError`` when a file is missing
    and ``KeyError`` when the weights lack a tensor the config implies.
    """
    config = _checked_config(json.loads(Path(model_dir, "config.json").read_text("utf-8")))
    weights = load_file(str(Path(model_dir, "model.safetensors")))
    return _Builder(config, weights).model()


def _checked_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise UnsupportedModelError("config.json: must be a JSON object")
    expected = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
    for key, value in expected.items():
        if config.get(key, value) != value:
            raise UnsupportedModelError(f"config.json: {key} is {config[key]!r}, not {value!r}")
    for key in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
        if type(config.get(key)) is not int or config[key] < 1:
            raise UnsupportedModelError(f"config.json: {key} must be a positive integer")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise UnsupportedModelError(
            "config.json: hidden_size must be a multiple of num_attention_heads"
        )
    return config


class _Builder:
    """Appends the encoder's nodes and initializers in the order it computes them; each
    method returns the name of the value it made."""

    def __init__(self, config: dict[str, Any], weights: dict[str, npt.NDArray[Any]]) -> None:
        self.weights = weights
        self.hidden: int = config["hidden_size"]
        self.heads: int = config["num_attention_heads"]
        self.layers: int = config["num_hidden_layers"]
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.constants: set[str] = set()

    def model(self) -> onnx.ModelProto:
        states = self.embeddings()
        bias = self.attention_bias()
        for layer in range(self.layers):
            states = self.layer(f"encoder.layer.{layer}", states, bias)
        self.nodes.append(helper.make_node("Identity", [states], [OUTPUT], name=OUTPUT))
        ids = [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"])
            for name in INPUTS
        ]
        out = helper.make_tensor_value_info(
            OUTPUT, TensorProto.FLOAT, ["batch", "tokens", self.hidden]
        )
        graph = helper.make_graph(self.nodes, "bert", ids, [out], initializer=self.initializers)
        return helper.make_model(
            graph,
            producer_name="tiered-memory",
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
        )

    def constant(self, value: float | list[int]) -> str:
        """A float32 scalar or an int64 vector, made once however often it is used."""
        name = f"const.{value}"
        if name not in self.constants:
            array = np.array(value, np.int64 if isinstance(value, list) else np.float32)
            self.initializers.append(numpy_helper.from_array(array, name))
            self.constants.add(name)
        return name

    def weight(self, name: str, transpose: bool = False) -> str:
        """A checkpoint tensor; a linear layer's (out x in) weight transposed for MatMul."""
        array = self.weights[name]
        array = np.ascontiguousarray(array.T if transpose else array, dtype=np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, name: str, inputs: list[str], **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attributes))
        return name

    def linear(self, prefix: str, states: str) -> str:
        weight = self.weight(f"{prefix}.weight", transpose=True)
        product = self.op("MatMul", f"{prefix}.matmul", [states, weight])
        return self.op("Add", f"{prefix}.out", [product, self.weight(f"{prefix}.bias")])

    def layer_norm(self, prefix: str, states: str) -> str:
        scale_and_shift = [self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")]
        return self.op(
            "LayerNormalization",
            f"{prefix}.out",
            [states, *scale_and_shift],
            axis=-1,
            epsilon=self.eps,
        )

    def embeddings(self) -> str:
        table = "embeddings.{}_embeddings.weight".format
        words = self.op("Gather", "embeddings.words", [self.weight(table("word")), "input_ids"])
        types = self.op(
            "Gather", "embeddings.types", [self.weight(table("token_type")), "token_type_ids"]
        )
        # Positions 0 .. tokens-1 are the first rows of the position table.
        shape = self.op("Shape", "embeddings.shape", ["input_ids"])
        tokens = self.op(
            "Slice", "embeddings.tokens", [shape, self.constant([1]), self.constant([2])]
        )
        positions = self.op(
            "Slice",
            "embeddings.positions",
            [self.weight(table("position")), self.constant([0]), tokens],
        )
        summed = self.op("Add", "embeddings.sum", [words, types])
        summed = self.op("Add", "embeddings.sum.positions", [summed, positions])
        return self.layer_norm("embeddings.LayerNorm", summed)

    def attention_bias(self) -> str:
        """0 where a token may be attended to and the lowest float32 where it is padding,
        shaped batch x 1 x 1 x tokens to add to every head's scores, as ``BertModel`` does."""
        mask = self.op("Cast", "mask.float", ["attention_mask"], to=TensorProto.FLOAT)
        padding = self.op("Sub", "mask.padding", [self.constant(1.0), mask])
        lowest = self.constant(float(np.finfo(np.float32).min))
        bias = self.op("Mul", "mask.bias", [padding, lowest])
        return self.op("Unsqueeze", "mask.bias.heads", [bias, self.constant([1, 2])])

    def layer(self, prefix: str, states: str, bias: str) -> str:
        attended = self.self_attention(f"{prefix}.attention.self", states, bias)
        projected = self.linear(f"{prefix}.attention.output.dense", attended)
        residual = self.op("Add", f"{prefix}.attention.output.residual", [projected, states])
        states = self.layer_norm(f"{prefix}.attention.output.LayerNorm", residual)
        widened = self.gelu(
            f"{prefix}.intermediate", self.linear(f"{prefix}.intermediate.dense", states)
        )
        narrowed = self.linear(f"{prefix}.output.dense", widened)
        residual = self.op("Add", f"{prefix}.output.residual", [narrowed, states])
        return self.layer_norm(f"{prefix}.output.LayerNorm", residual)

    def self_attention(self, prefix: str, states: str, bias: str) -> str:
        head_size = self.hidden // self.heads
        # Queries and keys each scaled by head_size ** -0.25, as torch's scaled dot-product
        # attention does, so that the scores round as they do there.
        scale = self.constant(head_size**-0.25)

        def split(name: str, perm: list[int]) -> str:
            projected = self.linear(f"{prefix}.{name}", states)
            heads = [0, 0, self.heads, head_size]  # 0: this dimension of the input
            per_head = self.op(
                "Reshape", f"{prefix}.{name}.heads", [projected, self.constant(heads)]
            )
            return self.op("Transpose", f"{prefix}.{name}.transposed", [per_head], perm=perm)

        query = self.op("Mul", f"{prefix}.query.scaled", [split("query", [0, 2, 1, 3]), scale])
        key = self.op("Mul", f"{prefix}.key.scaled", [split("key", [0, 2, 3, 1]), scale])
        value = split("value", [0, 2, 1, 3])
        scores = self.op("MatMul", f"{prefix}.scores", [query, key])
        masked = self.op("Add", f"{prefix}.scores.masked", [scores, bias])
        weights = self.op("Softmax", f"{prefix}.weights", [masked], axis=-1)
        context = self.op("MatMul", f"{prefix}.context", [weights, value])
        merged = self.op("Transpose", f"{prefix}.context.transposed", [context], perm=[0, 2, 1, 3])
        return self.op("Reshape", f"{prefix}.out", [merged, self.constant([0, 0, self.hidden])])

    def gelu(self, prefix: str, states: str) -> str:
        """x * (1 + erf(x / sqrt(2))) * 0.5: exact GELU, in the form ONNX Runtime fuses."""
        scaled = self.op("Div", f"{prefix}.div", [states, self.constant(math.sqrt(2.0))])
        shifted = self.op(
            "Add",
            f"{prefix}.shift",
            [self.op("Erf", f"{prefix}.erf", [scaled]), self.constant(1.0)],
        )
        product = self.op("Mul", f"{prefix}.mul", [states, shifted])
        return self.op("Mul", f"{prefix}.gelu", [product, self.constant(0.5)])
