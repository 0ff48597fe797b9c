"""ONNX graphs of pinned's models, built from the very same safetensors
weights with the ``onnx`` helper API (no export through PyTorch).

- ``build_mlp(manifest)``: the dense MLP of a pinned MLP manifest (the JSON
  ``SafetensorsMlp`` reads: weights file, layers, activations).
- ``build_minilm(model_dir)``: MiniLM-L6 / any BERT encoder of that form
  from ``config.json`` + ``model.safetensors``: embeddings, encoder layers,
  mask-weighted mean pooling, L2 normalisation. Inputs ``input_ids`` and
  ``attention_mask`` (int64, ``[batch, seq]``), output ``embedding``.

The graphs are written the way a PyTorch export writes them (MatMul + Add,
GELU as its erf expression, attention as Reshape/Transpose/MatMul/Softmax),
which is the form ONNX Runtime's graph optimiser recognises and fuses.

    python build_onnx.py mlp MANIFEST.json OUT.onnx
    python build_onnx.py minilm MODEL_DIR OUT.onnx [--check REFERENCE.json]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 18  # LayerNormalization (17), Reduce* axes as inputs (18)
IR_VERSION = 8  # what every ONNX Runtime since 1.10 reads


class Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self):
        self.nodes = []
        self.inits = []
        self.counter = 0

    def name(self, stem):
        self.counter += 1
        return f"{stem}_{self.counter}"

    def const(self, array, stem="c"):
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def op(self, kind, inputs, stem=None, outputs=1, **attrs):
        outs = [self.name(stem or kind.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(kind, inputs, outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def linear(self, x, weight_out_in, bias, stem):
        """``x @ W^T + b`` with W in PyTorch ``[out][in]`` layout."""
        w = self.const(np.ascontiguousarray(weight_out_in.T.astype(np.float32)), stem + "_w")
        y = self.op("MatMul", [x, w], stem + "_mm")
        if bias is not None:
            y = self.op("Add", [y, self.const(bias.astype(np.float32), stem + "_b")], stem)
        return y

    def gelu_erf(self, x):
        """``0.5 x (1 + erf(x / sqrt 2))``, the pattern ORT fuses to Gelu."""
        d = self.op("Div", [x, self.const(np.float32(math.sqrt(2.0)))])
        e = self.op("Erf", [d])
        a = self.op("Add", [e, self.const(np.float32(1.0))])
        m = self.op("Mul", [x, a])
        return self.op("Mul", [m, self.const(np.float32(0.5))], "gelu")

    def gelu_tanh(self, x):
        """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
        x3 = self.op("Pow", [x, self.const(np.float32(3.0))])
        inner = self.op("Add", [x, self.op("Mul", [x3, self.const(np.float32(0.044715))])])
        scaled = self.op("Mul", [inner, self.const(np.float32(math.sqrt(2.0 / math.pi)))])
        t = self.op("Add", [self.op("Tanh", [scaled]), self.const(np.float32(1.0))])
        return self.op("Mul", [self.op("Mul", [x, t]), self.const(np.float32(0.5))])

    def activation(self, x, kind):
        if kind == "none":
            return x
        if kind == "relu":
            return self.op("Relu", [x])
        if kind in ("gelu", "gelu_erf"):
            return self.gelu_erf(x)
        if kind == "gelu_tanh":
            return self.gelu_tanh(x)
        raise ValueError(f"unknown activation '{kind}'")

    def model(self, inputs, outputs, name):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="pinned bench/peers/build_onnx.py",
        )
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m, full_check=True)
        return m


def read_manifest(path):
    with open(path) as f:
        spec = json.load(f)
    weights = os.path.join(os.path.dirname(os.path.abspath(path)), spec["weights"])
    return spec, load_file(weights)


def build_mlp(manifest):
    """The MLP of ``manifest``; input ``x`` ``[batch, in]``, output ``y``."""
    spec, tensors = read_manifest(manifest)
    g = Graph()
    x = "x"
    widths = []
    for i, layer in enumerate(spec["layers"]):
        w = tensors[layer["weight"]].astype(np.float32)
        if not widths:
            widths.append(w.shape[1])
        elif w.shape[1] != widths[-1]:
            raise ValueError(f"layer {i}: in {w.shape[1]} != previous out {widths[-1]}")
        widths.append(w.shape[0])
        b = tensors[layer["bias"]] if layer.get("bias") else None
        x = g.linear(x, w, b, f"fc{i}")
        x = g.activation(x, layer.get("activation", "none"))
    g.nodes.append(helper.make_node("Identity", [x], ["y"]))
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", widths[0]])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", widths[-1]])
    return g.model([inp], [out], "pinned_mlp"), widths


def build_minilm(model_dir):
    """The BERT encoder + mean pooling + L2 normalisation of ``model_dir``."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    t = load_file(os.path.join(model_dir, "model.safetensors"))
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in t else ""
    w = lambda name: t[prefix + name].astype(np.float32)  # noqa: E731
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    d = h // heads
    eps = float(cfg["layer_norm_eps"])
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {cfg['hidden_act']}: only gelu (erf)")
    g = Graph()

    # Embeddings: word + position[0..S) + token_type[0], then LayerNorm.
    words = g.op("Gather", [g.const(w("embeddings.word_embeddings.weight"), "word"), "input_ids"], axis=0)
    shape = g.op("Shape", ["input_ids"])
    seq = g.op("Gather", [shape, g.const(np.array(1, dtype=np.int64))], axis=0)
    positions = g.op(
        "Range",
        [g.const(np.array(0, dtype=np.int64)), seq, g.const(np.array(1, dtype=np.int64))],
    )
    pos = g.op("Gather", [g.const(w("embeddings.position_embeddings.weight"), "pos"), positions], axis=0)
    token_type = w("embeddings.token_type_embeddings.weight")[0]
    x = g.op("Add", [words, pos])
    x = g.op("Add", [x, g.const(token_type, "token_type")])
    x = g.op(
        "LayerNormalization",
        [x, g.const(w("embeddings.LayerNorm.weight")), g.const(w("embeddings.LayerNorm.bias"))],
        axis=-1,
        epsilon=eps,
    )

    # Additive attention mask [B, 1, 1, S]: 0 for tokens, -10000 for padding.
    maskf = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask4 = g.op("Unsqueeze", [maskf, g.const(np.array([1, 2], dtype=np.int64))])
    inv = g.op("Sub", [g.const(np.float32(1.0)), mask4])
    bias = g.op("Mul", [inv, g.const(np.float32(-10000.0))], "mask_bias")

    heads_shape = g.const(np.array([0, 0, heads, d], dtype=np.int64))
    hidden_shape = g.const(np.array([0, 0, h], dtype=np.int64))
    scale = g.const(np.float32(math.sqrt(d)))
    for layer in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        lin = lambda x, name, stem: g.linear(x, w(p + name + ".weight"), w(p + name + ".bias"), stem)  # noqa: E731
        q = lin(x, "attention.self.query", f"l{layer}_q")
        k = lin(x, "attention.self.key", f"l{layer}_k")
        v = lin(x, "attention.self.value", f"l{layer}_v")
        q = g.op("Transpose", [g.op("Reshape", [q, heads_shape])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, heads_shape])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, heads_shape])], perm=[0, 2, 1, 3])
        scores = g.op("Div", [g.op("MatMul", [q, k]), scale])
        probs = g.op("Softmax", [g.op("Add", [scores, bias])], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, hidden_shape])
        attn = lin(ctx, "attention.output.dense", f"l{layer}_o")
        x = g.op(
            "LayerNormalization",
            [
                g.op("Add", [attn, x]),
                g.const(w(p + "attention.output.LayerNorm.weight")),
                g.const(w(p + "attention.output.LayerNorm.bias")),
            ],
            axis=-1,
            epsilon=eps,
        )
        ffn = g.gelu_erf(lin(x, "intermediate.dense", f"l{layer}_ffn_in"))
        ffn = lin(ffn, "output.dense", f"l{layer}_ffn_out")
        x = g.op(
            "LayerNormalization",
            [
                g.op("Add", [ffn, x]),
                g.const(w(p + "output.LayerNorm.weight")),
                g.const(w(p + "output.LayerNorm.bias")),
            ],
            axis=-1,
            epsilon=eps,
        )

    # Mean over the tokens the mask keeps, then x / max(|x|, 1e-12).
    mask3 = g.op("Unsqueeze", [maskf, g.const(np.array([2], dtype=np.int64))])
    summed = g.op("ReduceSum", [g.op("Mul", [x, mask3]), g.const(np.array([1], dtype=np.int64))], keepdims=0)
    count = g.op("ReduceSum", [mask3, g.const(np.array([1], dtype=np.int64))], keepdims=0)
    count = g.op("Max", [count, g.const(np.float32(1e-9))])
    mean = g.op("Div", [summed, count])
    norm = g.op("ReduceL2", [mean, g.const(np.array([1], dtype=np.int64))], keepdims=1)
    norm = g.op("Max", [norm, g.const(np.float32(1e-12))])
    g.nodes.append(helper.make_node("Div", [mean, norm], ["embedding"]))

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
    ]
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", h])
    return g.model(inputs, [out], "pinned_minilm"), cfg


def check_minilm(onnx_path, reference_json, threads=1):
    """Largest |difference| between ONNX Runtime's embeddings and the
    sentence-transformers reference fixture, over every sentence."""
    import onnxruntime as ort

    with open(reference_json) as f:
        ref = json.load(f)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for s in ref["sentences"]:
        ids = np.array([s["input_ids"]], dtype=np.int64)
        mask = np.array([s["attention_mask"]], dtype=np.int64)
        (emb,) = sess.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        worst = max(worst, float(np.max(np.abs(emb[0] - np.array(s["embedding"], dtype=np.float32)))))
    return worst, len(ref["sentences"])


def mlp_reference(manifest, x):
    """The MLP in plain numpy (float64), for checking the graph."""
    from math import erf

    spec, tensors = read_manifest(manifest)
    y = x.astype(np.float64)
    verf = np.vectorize(erf)
    for layer in spec["layers"]:
        y = y @ tensors[layer["weight"]].astype(np.float64).T
        if layer.get("bias"):
            y = y + tensors[layer["bias"]]
        act = layer.get("activation", "none")
        if act in ("gelu", "gelu_erf"):
            y = 0.5 * y * (1.0 + verf(y / math.sqrt(2.0)))
        elif act == "relu":
            y = np.maximum(y, 0.0)
        elif act == "gelu_tanh":
            y = 0.5 * y * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (y + 0.044715 * y**3)))
    return y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["mlp", "minilm"])
    ap.add_argument("source", help="MLP manifest (JSON) or MiniLM directory")
    ap.add_argument("out", help="ONNX file to write")
    ap.add_argument("--check", metavar="REFERENCE_JSON", help="MiniLM: compare with the reference fixture")
    args = ap.parse_args(argv)
    if args.kind == "mlp":
        model, widths = build_mlp(args.source)
        onnx.save(model, args.out)
        print(f"wrote {args.out}: MLP {'x'.join(map(str, widths))}")
        return 0
    model, cfg = build_minilm(args.source)
    onnx.save(model, args.out)
    print(f"wrote {args.out}: BERT {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}")
    if args.check:
        worst, n = check_minilm(args.out, args.check)
        print(f"max |ORT - reference| over {n} sentences: {worst:.2e}")
        if worst > 1e-4:
            print("build_onnx: embeddings differ from the reference", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
