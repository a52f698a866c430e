"""Bytes of the tensors one training step saves for backward, from the architecture (a formula).

The forward of each supported family (Llama; BERT / RoBERTa) is written out op by op over the
meta-device model of a `lab.memory.estimate.Plan` (so the method's real targets, ranks, dropouts, dtypes and
frozen/trainable weights drive it). Each op saves what PyTorch's autograd formula for it saves,
and only when the gradient that needs it is required; a tensor saved by several ops, or a view
of one, is one storage and is counted once. This is what `lab.memory.ledger` measures with
`saved_tensors_hooks`, so the two can be compared term by term.

Rules taken from the libraries (transformers 5, peft 0.21, bitsandbytes 0.50, torch 2.x):
- linear saves its input when its weight trains, and its weight when its input needs a gradient
  (a parameter: weight bytes, not counted here; an autocast copy of it is counted);
- a bitsandbytes 4-bit matmul saves no activation (only the packed weight, in ctx);
- LoRA: peft casts the input to the adapter dtype, then dropout (if p > 0), A, B: A saves its
  (dropped) input, B saves A's output (r per token);
- dropout saves, when its input needs a gradient, a mask: on CUDA `native_dropout`'s bool mask
  (1 byte/element); on the CPU an `input * noise` product whose noise has the input's dtype;
- RMSNorm (Llama) saves its fp32 input and rsqrt (1 per token), and the normalized tensor when its
  weight trains; LayerNorm saves its input, mean and rstd (fp32, 1 per token);
- attention through SDPA: a fused kernel (CPU flash without dropout; CUDA flash) saves q, k, v,
  the output and an fp32 logsumexp per head and token; the CPU math path (attention dropout > 0)
  saves scaled q and k, the softmax, its dropout noise and the dropped probabilities (S x S per
  head); with a padding mask Llama's grouped k/v are repeated to all heads, and the fused CPU
  kernel saves the mask as a float bias made anew in every layer (B x S x S elements);
- loss: log_softmax's fp32 output (tokens x vocab for a causal LM), the int64 targets and
  scalars;
- gradient checkpointing (non-reentrant): a checkpointed layer keeps its inputs (positional ones
  through saved-tensor hooks, keyword ones such as rotary cos/sin and position ids in the closure)
  and saves nothing inside.

The CPU fp32 path is validated against measured runs (tests/test_accounting.py). The CUDA rules
(bf16 autocast casts, bool masks, fused kernels) follow the same sources but are not validated on
a GPU here; results say so. CPU bf16 autocast is validated like fp32 (reports/ledger_vs_estimate.md,
its bf16 rows): on the CPU, SDPA's math path (BERT's attention dropout) computes in fp32 whatever
autocast gives it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

FP32, INT64, BOOL = torch.float32, torch.int64, torch.bool


@dataclass(eq=False)
class Act:
    """An abstract tensor: how many elements, their dtype, whether it needs a gradient, its storage."""

    numel: int
    dtype: torch.dtype
    grad: bool
    storage: object = field(default_factory=object)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class Saved:
    def __init__(self):
        # keyed by id(): holding the storage object too keeps that id from being reused
        self.storages: dict[int, tuple[object, int]] = {}
        self.parts: dict[str, int] = defaultdict(int)

    def save(self, t: Act | None, part: str) -> None:
        if t is None or id(t.storage) in self.storages:
            return
        self.storages[id(t.storage)] = (t.storage, t.nbytes)
        self.parts[part] += t.nbytes


def new(numel: int, dtype: torch.dtype, grad: bool) -> Act:
    return Act(int(numel), dtype, bool(grad))


def cast(x: Act, dtype: torch.dtype) -> Act:
    return x if x.dtype == dtype else new(x.numel, dtype, x.grad)


def promote(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    return torch.promote_types(a, b)


class Forward:
    """One training step's forward over a Plan, collecting what is saved for backward."""

    def __init__(self, plan, batch: int, seq_len: int, padded: bool, token_types: bool = False):
        self.plan, self.B, self.S, self.T = plan, batch, seq_len, batch * seq_len
        self.padded = padded
        self.token_types = token_types
        self.cuda = plan.device == "cuda"
        self.autocast = plan.autocast
        self.saved = Saved()
        self.weight_copies: dict[int, Act] = {}
        # the Trainer passes num_items_in_batch (an fp32 scalar) to the model's forward
        self.num_items = new(1, FP32, False)
        cfg = plan.cfg
        self.checkpointing = bool(cfg.trainer.gradient_checkpointing)
        # With checkpointing the Trainer calls enable_input_require_grads (main input: input_ids).
        self.input_grads = self.checkpointing
        if self.cuda and padded:
            raise NotImplementedError("padded batches on CUDA (SDPA's memory-efficient kernel saves a float "
                                      "bias) are not modelled; estimate full-length rows")

    # ---- elementary ops ------------------------------------------------------------------------

    def dropout(self, x: Act, p: float, part: str) -> Act:
        if not p:
            return x
        if x.grad:
            self.saved.save(new(x.numel, BOOL if self.cuda else x.dtype, False), part)
        return new(x.numel, x.dtype, x.grad)

    def weight_for_autocast(self, weight) -> Act | None:
        """The autocast copy of a weight that is not already in the autocast dtype (None if none)."""
        if self.autocast is None or weight.dtype == self.autocast:
            return None
        if weight.requires_grad:  # autocast caches casts of leaves that require grad, once per region
            copy = self.weight_copies.get(id(weight))
            if copy is None:
                copy = self.weight_copies[id(weight)] = new(weight.numel(), self.autocast, False)
            return copy
        return new(weight.numel(), self.autocast, False)

    def matmul_weight(self, x: Act, weight, out_features: int, part: str) -> Act:
        """F.linear(x, weight): saves x if the weight trains, the weight if x needs a gradient."""
        tokens = x.numel // weight.shape[1]
        trains = weight.requires_grad
        if self.autocast is not None:
            xin = cast(x, self.autocast)
            wcopy = self.weight_for_autocast(weight)
            dtype = self.autocast
        else:
            xin, wcopy, dtype = x, None, promote(x.dtype, weight.dtype)
        if trains:
            self.saved.save(xin, part)
        if x.grad and wcopy is not None:
            self.saved.save(wcopy, "autocast weight copies")
        return new(tokens * out_features, dtype, x.grad or trains)

    def linear(self, x: Act, module, part: str) -> Act:
        """A linear layer as the model holds it: plain, 4-bit, LoRA-wrapped or a trainable head copy."""
        module = trained_copy(module)
        lora = getattr(module, "lora_A", None)
        base = module.get_base_layer() if lora is not None else module
        quantized = type(base).__name__ == "Linear4bit"
        if quantized:
            # bitsandbytes casts x to the compute dtype and returns the result in x's dtype; its
            # MatMul4Bit keeps only the packed weight for backward.
            out = new(x.numel // base.in_features * base.out_features, x.dtype, x.grad)
        else:
            out = self.matmul_weight(x, base.weight, base.out_features, part)
            if base.bias is not None and base.bias.requires_grad:
                out.grad = True
        if lora is None or "default" not in lora:
            return out
        a_weight, b_weight = lora["default"].weight, module.lora_B["default"].weight
        # peft's 4-bit LoRA leaves the input alone under autocast; the plain one casts it to the adapter dtype.
        xa = x if (quantized and self.autocast is not None) else cast(x, a_weight.dtype)
        dropout = module.lora_dropout["default"]
        xa = self.dropout(xa, getattr(dropout, "p", 0.0), f"{part} lora dropout")
        a = self.matmul_weight(xa, a_weight, a_weight.shape[0], f"{part} lora")
        self.matmul_weight(a, b_weight, b_weight.shape[0], f"{part} lora")
        return new(out.numel, out.dtype, True)

    def rmsnorm(self, x: Act, module, part: str) -> Act:
        weight = module.weight
        x32 = cast(x, FP32)
        rstd = new(x.numel // weight.numel(), FP32, x.grad)
        if x.grad:
            self.saved.save(x32, part)
            self.saved.save(rstd, part)
        normed = new(x.numel, FP32, x.grad)
        normed = cast(normed, x.dtype)
        if weight.requires_grad:
            self.saved.save(normed, part)
        return new(x.numel, promote(weight.dtype, x.dtype), x.grad or weight.requires_grad)

    def layernorm(self, x: Act, module, part: str) -> Act:
        trains = module.weight.requires_grad or (module.bias is not None and module.bias.requires_grad)
        xin = cast(x, FP32) if self.autocast is not None else x
        if x.grad or trains:
            tokens = x.numel // module.weight.numel()
            self.saved.save(xin, part)
            self.saved.save(new(tokens, FP32, False), part)  # mean
            self.saved.save(new(tokens, FP32, False), part)  # rstd
        return new(x.numel, xin.dtype, x.grad or trains)

    def pointwise(self, x: Act, part: str) -> Act:
        """silu / gelu / tanh-like activations: saves the input (tanh saves its output: same size)."""
        if x.grad:
            self.saved.save(x, part)
        return new(x.numel, x.dtype, x.grad)

    def tanh(self, x: Act, part: str) -> Act:
        out = new(x.numel, x.dtype, x.grad)
        if x.grad:
            self.saved.save(out, part)
        return out

    def mul(self, a: Act, b: Act, part: str) -> Act:
        if a.grad:
            self.saved.save(b, part)
        if b.grad:
            self.saved.save(a, part)
        return new(max(a.numel, b.numel), promote(a.dtype, b.dtype), a.grad or b.grad)

    def add(self, a: Act, b: Act) -> Act:
        return new(max(a.numel, b.numel), promote(a.dtype, b.dtype), a.grad or b.grad)

    def embedding(self, ids: Act | None, module, part: str, input_hook: bool = False) -> Act:
        """ids=None: the indices are a slice of a model buffer (weights, not an activation)."""
        module = trained_copy(module)
        weight = module.weight
        if weight.requires_grad:
            self.saved.save(ids, part)
        rows = ids.numel if ids is not None else self.S
        return new(rows * weight.shape[1], weight.dtype, weight.requires_grad or (input_hook and self.input_grads))

    def attention(self, q: Act, k: Act, v: Act, heads: int, kv_heads: int, head_dim: int, dropout_p: float,
                  part: str) -> Act:
        """SDPA as transformers calls it; returns the output in (B, S, heads * head_dim) layout."""
        B, S = self.B, self.S
        if self.autocast is not None:
            q, k, v = cast(q, self.autocast), cast(k, self.autocast), cast(v, self.autocast)
        grad = q.grad or k.grad or v.grad
        # SDPA turns transformers' bool padding mask into a float bias of q's dtype in every call
        mask = new(B * S * S, q.dtype, False) if self.padded else None
        if kv_heads != heads and mask is not None:  # transformers' repeat_kv (no GQA kernel with a mask)
            k = new(k.numel * heads // kv_heads, k.dtype, k.grad)
            v = new(v.numel * heads // kv_heads, v.dtype, v.grad)
        math_path = dropout_p > 0 and not self.cuda
        if not math_path:
            out = new(q.numel, q.dtype, grad)
            if grad:
                for t in (q, k, v, out):
                    self.saved.save(t, part)
                self.saved.save(new(B * heads * S, FP32, False), part)  # logsumexp
                self.saved.save(mask, "attention mask")
            return out  # already laid out (B, S, H, d): transpose(1, 2).contiguous() copies nothing
        # torch's math path: q*scale, k^T*scale, q@k^T, softmax, dropout, @v; on the CPU it computes in
        # fp32 whatever autocast gave it (bf16 inputs are upcast, the output cast back)
        out_dtype = q.dtype
        q, k, v = cast(q, FP32), cast(k, FP32), cast(v, FP32)
        qs, ks = new(q.numel, q.dtype, q.grad), new(k.numel, k.dtype, k.grad)
        if ks.grad:
            self.saved.save(qs, part)
        if qs.grad:
            self.saved.save(ks, part)
        scores_grad = q.grad or k.grad
        probs = new(B * heads * S * S, q.dtype, scores_grad)
        if scores_grad:
            self.saved.save(probs, part)
        dropped = self.dropout(probs, dropout_p, part)
        if v.grad:
            self.saved.save(dropped, part)
        if dropped.grad:
            self.saved.save(v, part)
        return new(q.numel, out_dtype, grad)  # the (B, H, S, d) result transposed into a new tensor

    def mask(self) -> Act:
        if not hasattr(self, "_mask"):
            self._mask = new(self.B * self.S * self.S, BOOL, False)
        return self._mask

    def cross_entropy(self, logits: Act, targets: Act, rows: int, part: str = "loss") -> None:
        logits = cast(logits, FP32)  # transformers' .float(); autocast runs log_softmax in fp32 too
        if logits.grad:
            self.saved.save(new(logits.numel, FP32, False), part)  # log_softmax output
            self.saved.save(targets, part)
            self.saved.save(new(1, FP32, False), part)  # nll_loss total_weight

    # ---- families ------------------------------------------------------------------------------

    def checkpointed(self, layer_fn, x: Act, part: str) -> Act:
        """Non-reentrant checkpoint: the layer's input is saved, nothing inside is."""
        self.saved.save(x, part)
        outer = self.saved
        self.saved = Saved()  # what the layer saves is recomputed in backward, not held
        try:
            return layer_fn(x)
        finally:
            self.saved = outer

    def llama(self) -> None:
        model = self.plan.base
        core, config = model.model, model.config
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        dropout_p = float(getattr(config, "attention_dropout", 0.0) or 0.0)
        B, S, T = self.B, self.S, self.T
        ids = new(T, INT64, False)
        x = self.embedding(ids, core.embed_tokens, "embeddings", input_hook=True)
        # rotary cos/sin: one (1, S, head_dim) pair for all layers, in the hidden states' dtype
        cos, sin = new(S * head_dim, x.dtype, False), new(S * head_dim, x.dtype, False)

        def layer_fn(layer):
            def run(h: Act) -> Act:
                attn = layer.self_attn
                y = self.rmsnorm(h, layer.input_layernorm, "norms")
                q = self.linear(y, attn.q_proj, "attention projections")
                k = self.linear(y, attn.k_proj, "attention projections")
                v = self.linear(y, attn.v_proj, "attention projections")
                if q.grad or k.grad:
                    self.saved.save(cos, "rotary")
                    self.saved.save(sin, "rotary")
                q = new(q.numel, promote(q.dtype, cos.dtype), q.grad)
                k = new(k.numel, promote(k.dtype, cos.dtype), k.grad)
                o = self.attention(q, k, v, heads, kv_heads, head_dim, dropout_p, "attention")
                o = self.linear(o, attn.o_proj, "attention projections")
                h = self.add(h, o)
                y = self.rmsnorm(h, layer.post_attention_layernorm, "norms")
                mlp = layer.mlp
                gate = self.linear(y, mlp.gate_proj, "mlp projections")
                up = self.linear(y, mlp.up_proj, "mlp projections")
                act = self.pointwise(gate, "mlp activations")
                prod = self.mul(act, up, "mlp activations")
                down = self.linear(prod, mlp.down_proj, "mlp projections")
                return self.add(h, down)
            return run

        for layer in core.layers[: config.num_hidden_layers]:
            if self.checkpointing:
                x = self.checkpointed(layer_fn(layer), x, "checkpointed layer inputs")
            else:
                x = layer_fn(layer)(x)
        if self.checkpointing:  # kwargs the checkpoint closures hold: cos, sin, position ids, mask
            for t in (cos, sin, new(S, INT64, False)):
                self.saved.save(t, "checkpoint closures")
            if self.padded:
                self.saved.save(self.mask(), "checkpoint closures")
        y = self.rmsnorm(x, core.norm, "norms")
        logits = self.linear(y, model.lm_head, "lm head")
        self.cross_entropy(logits, new(T, INT64, False), T)
        if logits.grad:
            self.saved.save(self.num_items, "loss")  # the divisor of the summed loss

    def bert(self) -> None:
        model = self.plan.base
        config = model.config
        roberta = config.model_type in ("roberta", "xlm-roberta")
        encoder_model = getattr(model, "roberta", None) or model.bert
        emb = encoder_model.embeddings
        heads = config.num_attention_heads
        head_dim = config.hidden_size // heads
        p_attn = float(config.attention_probs_dropout_prob or 0.0)
        p_hidden = float(config.hidden_dropout_prob or 0.0)
        B, S, T = self.B, self.S, self.T
        ids = new(T, INT64, False)
        x = self.embedding(ids, emb.word_embeddings, "embeddings", input_hook=True)
        # token types: the batch's own (B, S) when the tokenizer gives them (BERT WordPiece does), else a
        # buffer gathered at the position ids: one row for BERT (its position ids are a buffer slice),
        # one per sequence for RoBERTa (computed from the ids)
        rows = B if (roberta or self.token_types) else 1
        tt = self.embedding(new(rows * S, INT64, False), emb.token_type_embeddings, "embeddings")
        x = self.add(x, tt)
        pe = self.embedding(new(T, INT64, False) if roberta else None, emb.position_embeddings, "embeddings")
        x = self.add(x, pe)
        x = self.layernorm(x, emb.LayerNorm, "norms")
        x = self.dropout(x, p_hidden, "hidden dropout")

        def layer_fn(layer):
            def run(h: Act) -> Act:
                att = layer.attention
                q = self.linear(h, att.self.query, "attention projections")
                k = self.linear(h, att.self.key, "attention projections")
                v = self.linear(h, att.self.value, "attention projections")
                o = self.attention(q, k, v, heads, heads, head_dim, p_attn, "attention")
                o = self.linear(o, att.output.dense, "attention projections")
                o = self.dropout(o, p_hidden, "hidden dropout")
                h1 = self.layernorm(self.add(o, h), att.output.LayerNorm, "norms")
                i = self.linear(h1, layer.intermediate.dense, "mlp projections")
                g = self.pointwise(i, "mlp activations")
                o2 = self.linear(g, layer.output.dense, "mlp projections")
                o2 = self.dropout(o2, p_hidden, "hidden dropout")
                return self.layernorm(self.add(o2, h1), layer.output.LayerNorm, "norms")
            return run

        for layer in encoder_model.encoder.layer:
            if self.checkpointing:
                x = self.checkpointed(layer_fn(layer), x, "checkpointed layer inputs")
                if self.padded:
                    self.saved.save(self.mask(), "checkpoint closures")
            else:
                x = layer_fn(layer)(x)
        if self.checkpointing:  # the Trainer's num_items_in_batch reaches the layers as a keyword tensor
            self.saved.save(self.num_items, "checkpoint closures")
        p_cls = config.classifier_dropout if getattr(config, "classifier_dropout", None) is not None else p_hidden
        hidden = config.hidden_size
        # the first token is a view: a layer that saves it holds the whole (B, S, hidden) storage
        first = Act(B * hidden, x.dtype, x.grad, storage=x.storage)
        first_storage = Act(x.numel, x.dtype, x.grad, storage=x.storage)
        if roberta:
            head = trained_copy(model.classifier)
            # without dropout the dense layer gets the first token's view (its whole storage is kept),
            # unless autocast casts it into a copy first (saved by the linear below)
            if not p_cls and self.autocast is None and trained_copy(head.dense).weight.requires_grad:
                self.saved.save(first_storage, "head")
            z = self.dropout(first, p_cls, "head")
            z = self.linear(z, head.dense, "head")
            z = self.tanh(z, "head")
            z = self.dropout(z, p_cls, "head")
            logits = self.linear(z, head.out_proj, "head")
        else:
            pooler = trained_copy(encoder_model.pooler)
            dense = trained_copy(pooler.dense)
            if self.autocast is None:
                if dense.weight.requires_grad:
                    self.saved.save(first_storage, "head")
                z = new(B * hidden, x.dtype, x.grad or dense.weight.requires_grad)
            else:  # autocast casts the first token's view into a copy of its own (and the weight)
                z = self.matmul_weight(first, dense.weight, hidden, "head")
            z = self.tanh(z, "head")
            z = self.dropout(z, p_cls, "head")
            logits = self.linear(z, model.classifier, "head")
        self.cross_entropy(logits, new(B, INT64, False), B)


def trained_copy(module):
    """The module peft runs: the trainable copy inside a ModulesToSaveWrapper, else the module."""
    copies = getattr(module, "modules_to_save", None)
    if isinstance(copies, torch.nn.ModuleDict) and "default" in copies:
        return copies["default"]
    return module


# Mistral and Qwen2 decoders are Llama's forward under other names: the same modules (q/k/v/o,
# gate/up/down, two RMSNorms, rotary, SDPA); Qwen2's q/k/v biases save nothing when frozen.
FAMILIES = {"llama": "llama", "mistral": "llama", "qwen2": "llama",
            "bert": "bert", "roberta": "bert", "xlm-roberta": "bert"}


# LoraConfig options that change what a LoRA layer's forward saves nowhere: the formula below still holds
# (rank and alpha patterns are read from the built modules, initialisations only set starting values).
FORWARD_NEUTRAL_LORA_OPTIONS = {"init_lora_weights", "rank_pattern", "alpha_pattern", "layers_to_transform",
                                "layers_pattern", "exclude_modules"}


def method_gap(method) -> str | None:
    """Why the formula does not cover this method, or None: it is written out for full fine-tuning and for
    LoRA's adapter path (A, B, dropout) only. Any other adapter (VeRA, IA3, LoHa, OFT, prompt tuning, ...)
    is declined by name rather than estimated as if it saved nothing."""
    peft_type = method.get("peft_type")
    if peft_type not in (None, "LORA"):
        return (f"no activation formula for method {method.name} (peft {peft_type}): only full fine-tuning's and "
                "LoRA's saved tensors are written out (lab.memory.activations); its ledger measures them")
    if method.get("use_dora"):
        return "no activation formula for DoRA (its weight-norm path saves more than LoRA's)"
    unknown = sorted(set(method.get("peft") or {}) - FORWARD_NEUTRAL_LORA_OPTIONS)
    if peft_type == "LORA" and unknown:
        return (f"no activation formula for method {method.name}: LoraConfig options {', '.join(unknown)} may change "
                "what its layers save")
    return None


def estimate_saved(plan, batch: int, seq_len: int, padded: bool = False, token_types: bool = False) -> dict:
    """Bytes saved for backward at the end of one training step's forward, by part.

    padded: some rows of the batch are padding (attention masks are built and saved);
    token_types: the batch carries token_type_ids (BERT tokenizers give them).
    """
    gap = method_gap(plan.cfg.method)
    if gap:
        raise NotImplementedError(gap)
    model_type = plan.base.config.model_type
    family = FAMILIES.get(model_type)
    if family is None:
        raise NotImplementedError(f"no activation formula for model_type {model_type} (have: "
                                  + ", ".join(sorted(FAMILIES)) + ")")
    window = getattr(plan.base.config, "sliding_window", None)
    if window and getattr(plan.base.config, "use_sliding_window", True) and seq_len > window:
        # beyond the window transformers hands SDPA an explicit mask (no causal fast path): not modelled
        raise NotImplementedError(f"seq_len {seq_len} above the model's sliding window ({window} tokens): no "
                                  "activation formula for windowed attention; plan at most the window")
    fwd = Forward(plan, batch, seq_len, padded, token_types)
    getattr(fwd, family)()
    parts = dict(sorted((k, v) for k, v in fwd.saved.parts.items() if v))
    # autocast caches its casts of trainable weights until the forward ends; those no op saved
    # (inside checkpointed layers) are freed then, before any gradient exists
    cache = sum(c.nbytes for c in fwd.weight_copies.values() if id(c.storage) not in fwd.saved.storages)
    return {"total": sum(parts.values()), "by_part": parts, "autocast_cache_unsaved": cache,
            "family": family, "device": plan.device,
            "validated": plan.device == "cpu" and plan.autocast is None,
            "gradient_checkpointing": fwd.checkpointing, "padded": padded}
