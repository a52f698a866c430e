"""The measured memory ledger of a run: what each category really holds, in bytes, device-independent.

- weights: `lab.memory.measure.weight_bytes` (by role and storage; 4-bit packed data and constants apart);
- buffers: the model's registered buffers (rotary frequencies, position ids, ...);
- gradients: the distinct `.grad` storages after the probe step's backward;
- optimizer state: the real optimizer's state tensors after training, by state name (bitsandbytes'
  paged buffers counted apart as well);
- activations: the distinct storages autograd saves for backward during the forward of one training
  step on the run's probe batch (`torch.autograd.graph.saved_tensors_hooks`), parameters and buffers
  excluded. The probe batch is the longest batch the run can see (`probe_batch`: the batch_size
  longest training rows, padded to the longest), stepped once before training with the random state
  put back and the gradients cleared, so the ledger is the same for every seed of a cell (the first
  shuffled batch's padded length varies with the seed) and is the step's peak, not one sample. With
  gradient checkpointing the checkpoint closures' keyword tensors (rotary cos/sin, position ids,
  masks) are added: the checkpoint holds them without passing them through the hooks.

`placement` splits weights, buffers, gradients and optimizer state into host (CPU memory) and
device bytes, which differ under offloading (FSDP CPU offload keeps the first three and the
optimizer state on the host); on a CPU-only run everything is host memory. Under FSDP the
tensors counted are this process's shards.

`ledger_total` adds the categories as if all were held at once (gradients are allocated during
backward while the saved activations are being freed, so the two overlap only in part); the
device's own measured peak (`lab.memory.measure.PeakMemory`) also holds allocator caching, workspaces and
transient tensors. Measured byte counts are those of the tensors' storages, so they do not depend
on the device or its allocator.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import TrainerCallback
from transformers.modeling_layers import GradientCheckpointingLayer

from lab.memory.measure import quant_constant_bytes, weight_bytes


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's (FSDP2's) shard held by this process; any other tensor as it is."""
    return t.to_local() if type(t).__name__ == "DTensor" else t


def _storage_key(t: torch.Tensor) -> tuple:
    t = _local(t)
    return (t.device.type, t.device.index, t.untyped_storage().data_ptr())


def placement(tensors, nbytes=None) -> dict:
    """Bytes of distinct storages by where they live: `host` (CPU memory) or `device`."""
    out, seen = {"host": 0, "device": 0}, set()
    for t in tensors:
        t = _local(t)
        key = _storage_key(t)
        if key in seen:
            continue
        seen.add(key)
        out["host" if t.device.type == "cpu" else "device"] += nbytes(t) if nbytes else t.untyped_storage().nbytes()
    return out


def weight_placement(model: torch.nn.Module) -> dict:
    """Host / device bytes of the weights as `lab.memory.measure.weight_bytes` counts them (4-bit constants with
    their weight)."""

    def nbytes(p):
        constants = quant_constant_bytes(p) if getattr(p, "quant_state", None) is not None else 0
        return p.numel() * p.element_size() + constants

    return placement(model.parameters(), nbytes)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


class SavedTensors:
    """Distinct storages saved for backward from `start()` until backward first unpacks one."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.exclude = {_storage_key(t) for t in list(model.parameters()) + list(model.buffers())}
        self.storages: dict[tuple, tuple[int, str]] = {}
        self.closures: dict[tuple, tuple[int, str]] = {}
        self.backward_started = False
        self.batch: dict = {}
        self._hooks = None
        self._handles = []

    def _add(self, table: dict, t: torch.Tensor) -> None:
        if self.backward_started or t.device.type == "meta":
            return
        key = _storage_key(t)
        if key in self.exclude or key in self.storages or key in self.closures:
            return
        nbytes = t.untyped_storage().nbytes()
        if nbytes:
            table[key] = (nbytes, str(t.dtype).removeprefix("torch."))

    def _pack(self, t):
        self._add(self.storages, t)
        return t

    def _unpack(self, t):
        self.backward_started = True
        return t

    def _closure_hook(self, module, args, kwargs):
        if getattr(module, "gradient_checkpointing", False) and module.training:
            for t in _tensors(kwargs):
                self._add(self.closures, t)

    def _batch_hook(self, module, args, kwargs):
        if self.batch:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if isinstance(ids, torch.Tensor):
            self.batch = {"batch": int(ids.shape[0]), "seq_len": int(ids.shape[1]),
                          "padded": bool(mask is not None and not bool(mask.all())),
                          "token_type_ids": kwargs.get("token_type_ids") is not None}

    def start(self) -> None:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        self._handles.append(self.model.register_forward_pre_hook(self._batch_hook, with_kwargs=True))
        for module in self.model.modules():
            if isinstance(module, GradientCheckpointingLayer):
                self._handles.append(module.register_forward_pre_hook(self._closure_hook, with_kwargs=True))

    def stop(self) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def result(self) -> dict:
        by_dtype: dict[str, int] = defaultdict(int)
        for nbytes, dtype in self.storages.values():
            by_dtype[dtype] += nbytes
        hooked = sum(n for n, _ in self.storages.values())
        closures = sum(n for n, _ in self.closures.values())
        return {"saved_for_backward": hooked + closures, "via_saved_tensor_hooks": hooked,
                "checkpoint_closures": closures, "storages": len(self.storages) + len(self.closures),
                "by_dtype": dict(sorted(by_dtype.items())), **self.batch}


def gradient_bytes(model: torch.nn.Module) -> int:
    return int(sum(gradient_placement(model).values()))


def gradient_placement(model: torch.nn.Module) -> dict:
    return placement(p.grad for p in model.parameters() if p.grad is not None)


def optimizer_state_bytes(optimizer) -> dict:
    """Bytes of the optimizer's state tensors, by state name; Python numbers (e.g. bnb's step) hold none."""
    inner = getattr(optimizer, "optimizer", optimizer)
    by_key: dict[str, int] = defaultdict(int)
    seen, paged, where = set(), 0, {"host": 0, "device": 0}
    for state in inner.state.values():
        for name, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            key = _storage_key(value)
            if key in seen:
                continue
            seen.add(key)
            nbytes = _local(value).untyped_storage().nbytes()
            by_key[name] += nbytes
            # bitsandbytes' paged buffers are CUDA unified memory, reported as CUDA tensors.
            where["host" if _local(value).device.type == "cpu" else "device"] += nbytes
            if getattr(value, "is_paged", False):
                paged += nbytes
    return {"total": int(sum(by_key.values())), "by_key": dict(sorted(by_key.items())), "paged": paged,
            "placement": where, "optimizer": f"{type(inner).__module__}.{type(inner).__name__}"}


def measure_step(model: torch.nn.Module, batch: dict) -> dict:
    """One forward + backward outside the Trainer: saved activations and gradient bytes."""
    probe = SavedTensors(model)
    probe.start()
    try:
        loss = model(**batch).loss
        probe.stop()
        loss.backward()
    finally:
        probe.stop()
    return {"activations": probe.result(), "gradients": gradient_bytes(model)}


def probe_batch(rows, collate, batch_size: int) -> dict:
    """The longest batch a run can see: its `batch_size` longest rows (ties by position, so the same
    rows for every seed), through the run's collator, which pads them to the longest."""
    lengths = [len(ids) for ids in rows["input_ids"]]
    longest = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))[:batch_size]
    return collate([rows[i] for i in longest])


class LedgerProbe(TrainerCallback):
    """Measures one training step on a fixed batch (`probe_batch`) when training begins: saved
    activations during its forward, then the gradients it leaves. The Trainer's own `training_step`
    runs it on the prepared model (autocast, gradient checkpointing, a DDP/FSDP wrapper as in training);
    the random state is put back and the gradients cleared, so training goes on as without it."""

    def __init__(self):
        self.trainer = None
        self.batch = None
        self.activations = None
        self.gradients = None
        self.gradient_placement = None

    def bind(self, trainer, batch: dict) -> None:
        self.trainer, self.batch = trainer, batch

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.trainer is None or self.activations is not None:
            return
        trainer = self.trainer
        # Set by the Trainer's loop per step; the probe step runs before the loop's first step.
        if getattr(trainer, "current_gradient_accumulation_steps", None) is None:
            trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps
        cuda = [torch.cuda.current_device()] if args.device.type == "cuda" else []
        probe = SavedTensors(model)
        with torch.random.fork_rng(devices=cuda):
            probe.start()
            try:
                trainer.training_step(trainer.model_wrapped, dict(self.batch))
            finally:
                probe.stop()
        self.activations = probe.result()
        self.gradient_placement = gradient_placement(model)
        self.gradients = int(sum(self.gradient_placement.values()))
        model.zero_grad(set_to_none=True)


def measured(probe: LedgerProbe | None, optimizer, model, device: str = "cpu") -> dict:
    """The ledger entries of a finished run for its record's `memory` (bytes).

    Top-level numbers are additive byte categories (as `weights` is): buffers, gradients,
    optimizer_state (by state name) and activations; `ledger_total` sums them with the weights.
    `measured_steps` lists the measured step(s) with their shape and detail (a list: not a category);
    the recipe sets the analytic estimate beside each (lab.memory.compare.estimate_steps): measuring
    never imports the estimator.
    """
    state = optimizer_state_bytes(optimizer)
    acts = probe.activations if probe else None
    out = {
        "buffers": int(sum(b.untyped_storage().nbytes() for b in model.buffers())),
        "gradients": probe.gradients if probe else None,
        "optimizer_state": state["by_key"],
        "optimizer_state_paged_total": state["paged"],
        "activations": acts["saved_for_backward"] if acts else None,
        "placement": {"weights": weight_placement(model), "buffers": placement(model.buffers()),
                      "gradients": probe.gradient_placement if probe else None,
                      "optimizer_state": state["placement"]},
    }
    if device == "cpu":
        out["placement_note"] = "CPU-only run: host and device are one memory, so every byte is counted as host"
    if acts is not None and probe.gradients is not None:
        out["ledger_total"] = (int(sum(weight_bytes(model).values())) + out["buffers"] + probe.gradients
                               + state["total"] + acts["saved_for_backward"])
        # Step 0: the probe step on the longest batch, before the first step of training.
        out["measured_steps"] = [{"step": 0, "probe": "the batch_size longest training rows", **acts,
                                  "gradients": probe.gradients}]
    return out
